#!/usr/bin/python3
"""Writes the image's software bill of materials as SPDX 2.3 JSON: effnetd
itself (version, licence, the files it installed with their SHA-256) and
every Debian package of the runtime root (name, version, architecture, source
package, a purl), read from that root's dpkg database and copyright files.
The Containerfile runs it on the finished runtime stage, so the list is what
the image holds, not what was asked for.

Usage: sbom.py ROOT INSTALL_TREE VERSION RELEASE > sbom.spdx.json
  ROOT          the runtime stage's root (its var/lib/dpkg/status, usr/share/doc)
  INSTALL_TREE  what `meson install --destdir` put into the image
  VERSION       effnetd's version; RELEASE the Debian release (bookworm, trixie)
"""

import datetime
import hashlib
import json
import os
import re
import sys
import uuid

DEBIAN_VERSION = {"bookworm": "12", "trixie": "13"}


def dpkg_packages(status_path):
    """Installed packages as dicts of their status fields."""
    pkgs, cur, key = [], {}, None
    for line in open(status_path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            if cur:
                pkgs.append(cur)
            cur, key = {}, None
        elif line[0] in " \t":
            if key:
                cur[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        pkgs.append(cur)
    return [p for p in pkgs if p.get("Status", "").endswith(" installed")]


def dep5_licenses(root, name):
    """The licence names a machine-readable copyright file declares (Debian's
    short names, which are not all SPDX identifiers: kept as a comment)."""
    path = os.path.join(root, "usr/share/doc", name, "copyright")
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return []
    return sorted(set(m.strip() for m in re.findall(r"^License:[ \t]*(\S[^\n]*)", text, re.M)))


def spdx_id(text):
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    root, tree, version, release = sys.argv[1:5]
    distro = f"debian-{DEBIAN_VERSION.get(release, release)}"
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else \
        datetime.datetime.now(datetime.timezone.utc)
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"effnetd-{version}-image",
        "documentNamespace": f"https://spdx.org/spdxdocs/effnetd-{version}-{uuid.uuid4()}",
        "creationInfo": {"created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "creators": ["Tool: effnetd deploy/container/sbom.py", "Organization: effnetd"]},
        "packages": [],
        "files": [],
        "relationships": [],
    }
    effnetd = "SPDXRef-Package-effnetd"
    doc["packages"].append({
        "SPDXID": effnetd, "name": "effnetd", "versionInfo": version, "supplier": "Organization: effnetd",
        "downloadLocation": "NOASSERTION", "filesAnalyzed": True, "licenseConcluded": "Apache-2.0",
        "licenseDeclared": "Apache-2.0", "licenseInfoFromFiles": ["NOASSERTION"], "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "APPLICATION",
    })
    doc["relationships"].append({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                                 "relatedSpdxElement": effnetd})
    for dirpath, _, names in sorted(os.walk(tree)):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = "/" + os.path.relpath(path, tree)
            digest = sha256(path)
            fid = "SPDXRef-File-" + spdx_id(rel.strip("/"))
            doc["files"].append({"SPDXID": fid, "fileName": "." + rel,
                                 "checksums": [{"algorithm": "SHA256", "checksumValue": digest},
                                               {"algorithm": "SHA1", "checksumValue": hashlib.sha1(
                                                   open(path, "rb").read()).hexdigest()}],
                                 "licenseConcluded": "NOASSERTION", "licenseInfoInFiles": ["NOASSERTION"],
                                 "copyrightText": "NOASSERTION"})
            doc["relationships"].append({"spdxElementId": effnetd, "relationshipType": "CONTAINS",
                                         "relatedSpdxElement": fid})
    # SPDX 2.3 7.9: the verification code is the SHA-1 of the sorted file SHA-1s.
    sha1s = sorted(f["checksums"][1]["checksumValue"] for f in doc["files"])
    doc["packages"][0]["packageVerificationCode"] = {
        "packageVerificationCodeValue": hashlib.sha1("".join(sha1s).encode()).hexdigest()}
    for p in sorted(dpkg_packages(os.path.join(root, "var/lib/dpkg/status")), key=lambda p: p["Package"]):
        name, ver, arch = p["Package"], p.get("Version", ""), p.get("Architecture", "")
        pid = "SPDXRef-Package-deb-" + spdx_id(f"{name}-{ver}-{arch}")
        source = p.get("Source", name).split(" ")[0]
        pkg = {
            "SPDXID": pid, "name": name, "versionInfo": ver,
            "supplier": "Organization: " + p.get("Maintainer", "Debian").replace("\n", " "),
            "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
            "sourceInfo": f"built from Debian source package {source}",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:deb/debian/{name}@{ver}?arch={arch}&distro={distro}"}],
        }
        lic = dep5_licenses(root, name)
        if lic:
            pkg["licenseComments"] = "Debian copyright file: " + ", ".join(lic)
        doc["packages"].append(pkg)
        doc["relationships"].append({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                                     "relatedSpdxElement": pid})
    json.dump(doc, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
