"""Strip credentials from URIs before they reach a log, a message or a status field.

Build messages end up in the Job's termination message and in the ModelDeployment's status,
which anyone who can read the object sees. Userinfo (user:secret@) and query strings (the
signature of a presigned URL) must never get there.
"""

from __future__ import annotations

import re

# A URI with a scheme, as it may appear inside free text (an exception message, a path list).
_URI_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_uri(uri: str) -> str:
    """The URI without userinfo, query string or fragment; plain paths come back unchanged.

    Everything up to the last '@' before the query goes: a password may itself hold '/' or '@',
    and cutting too much of a path is harmless where leaking a secret is not.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:  # a local path has no userinfo; a '?...' is still cut, it may carry a signature
        return re.split(r"[?#]", uri, maxsplit=1)[0]
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    return f"{scheme}://{rest.rpartition('@')[2]}"


def redact_text(text: str) -> str:
    """Every URI inside free text passed through redact_uri."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)
