"""Run the BioImage Archive's own validator (bia-ro-crate-validator) on an RO-Crate, offline.

The validator needs Python >= 3.13, so this file is run with the interpreter of its own
environment (``deposit.VALIDATOR_PYTHON``), not imported by dlhisto. It imports nothing of
dlhisto. The crate's context URL https://w3id.org/ro/crate/1.1/context is answered from the
copy of the RO-Crate context that the ``rocrate`` package ships (version 1.3, a superset of
1.1), for each of the three libraries that would fetch it (pyld, rdflib, requests in
roc-validator), so that validation never needs the network; any other URL is refused.

Prints one JSON object: {"validator": version, "valid": bool, "issues": {severity: [...]}}.
"""

import json
import sys
from importlib import metadata, resources
from pathlib import Path

RO_CRATE_CONTEXTS = ("https://w3id.org/ro/crate/1.1/context", "https://w3id.org/ro/crate/1.2/context",
                     "https://w3id.org/ro/crate/1.3/context")


def go_offline() -> None:
    """Answer the RO-Crate context URL from disk, for pyld and for rdflib; fetch nothing else."""
    import pyld.jsonld
    import rdflib.plugins.shared.jsonld.context as rdflib_context

    document = {"@context": json.loads(resources.files("rocrate").joinpath("data/ro-crate.jsonld")
                                       .read_text(encoding="utf-8"))["@context"]}

    def local(url: str) -> dict:
        if str(url).rstrip("/") not in RO_CRATE_CONTEXTS:
            raise RuntimeError(f"offline: refusing to fetch {url}")
        return document

    pyld.jsonld.set_document_loader(lambda url, options=None: {
        "contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": local(url)})
    fetch = rdflib_context.source_to_json
    rdflib_context.source_to_json = lambda source, *args, **kwargs: (
        (local(source), None) if isinstance(source, str) and "://" in source else fetch(source, *args, **kwargs))

    import requests
    from rocrate_validator.utils.http import HttpRequester

    class Offline(requests.adapters.BaseAdapter):  # the RO-Crate profile checks fetch with requests
        def send(self, request, **kwargs):
            response = requests.Response()
            response.status_code, response.url, response.request = 200, request.url, request
            response._content = json.dumps(local(request.url)).encode()
            response.headers["Content-Type"] = "application/ld+json"
            return response

        def close(self):
            pass

    session = requests.Session()  # a plain session: the validator's cached one wraps responses
    for scheme in ("http://", "https://"):
        session.mount(scheme, Offline())
    HttpRequester().session = session


def main(crate: str) -> int:
    import logging

    logging.disable(logging.CRITICAL)  # the report below says it all
    go_offline()
    from bia_ro_crate.core.parser.ro_crate_parser import ROCrateParser

    parser = ROCrateParser(Path(crate))  # what the validator's `validate` command runs
    failure = None
    try:
        parser.parse()
    except ExceptionGroup:  # the validation errors, listed in parser.issues
        pass
    except Exception as exc:  # the validator could not read the crate at all
        failure = f"{type(exc).__name__}: {exc}"
    issues: dict = {}
    for issue in parser.issues:
        issues.setdefault(str(issue.severity), []).append(issue.format_message())
    if failure:
        issues.setdefault("CRITICAL", []).append(failure)
    print(json.dumps({"validator": metadata.version("bia-ro-crate-validator"),
                      "valid": not issues.get("CRITICAL") and not issues.get("ERROR"), "issues": issues}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
