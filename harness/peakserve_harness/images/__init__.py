"""Container images without Docker: a Debian base from debootstrap, the operator image from
images/operator/Dockerfile (built by buildah, vfs storage, chroot isolation) and a CPU Triton image
from the nvidia-pytriton wheel, written as OCI archives that ``ctr -n k8s.io images import`` takes.

``python -m peakserve_harness.images build base|operator|triton|all --out DIR`` builds them, checks
them by running them from their unpacked root filesystems (read-only, as their non-root users) and
writes DIR/images.json with build times and sizes.

Modules: ``oci_image`` (config, manifest, index: pure), ``oci_layer`` (layers and diff layers from
directories), ``oci_archive`` (write and unpack OCI archives), ``dockerfile`` (the variant that
differs from images/operator/Dockerfile only in its base), ``debian_base``, ``operator_image``
(``operator_cache``: the operator image cached by the content it is built from),
``triton_image``, ``sandbox`` (run a command in an unpacked rootfs), ``verify``,
``progress``, ``results``, ``store`` (cache paths and locks).
"""
