"""The ModelDeployment API: typed spec models, and the CRD generated from them."""

GROUP = "peakserve.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
API_VERSION = f"{GROUP}/{VERSION}"

# The field manager of everything peakserve applies, and the managed-by label value of its children.
FIELD_MANAGER = "peakserve"
