"""Fetch the project's data assets: from a local folder when it has them, else from their URLs.

Reads the ``assets`` of project.yml (``dest``, ``url``, ``sha256``), verifies every file's
sha256, and skips files that are already in place. Nothing is downloaded unless a file is
missing locally and ``--download`` is given, so offline machines never reach the network.

    python scripts/fetch_assets.py --local-dir ../shared/data [--download] [--only redocred/dev]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import srsly

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(asset: dict, local_dir: Path | None, download: bool) -> str:
    dest = ROOT / asset["dest"]
    expected = asset.get("sha256")
    if dest.exists() and (expected is None or sha256(dest) == expected):
        return "present"
    local = local_dir / asset["local"] if local_dir is not None and "local" in asset else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    if local is not None and local.exists():
        shutil.copyfile(local, dest)
        how = f"copied from {local}"
    elif download and asset.get("url"):
        urllib.request.urlretrieve(asset["url"], dest)
        how = f"downloaded from {asset['url']}"
        if asset["url"].endswith(".gz"):
            dest.write_bytes(gzip.decompress(dest.read_bytes()))
    else:
        return "missing"
    if expected is not None and sha256(dest) != expected:
        dest.unlink()
        raise SystemExit(f"error: {asset['dest']} ({how}) does not match its sha256 {expected}")
    return how


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-dir", type=Path, help="folder with the data (../shared/data)")
    parser.add_argument("--download", action="store_true", help="download what is not local")
    parser.add_argument("--only", nargs="*", default=None, help="dest prefixes to fetch")
    parser.add_argument("--project", type=Path, default=ROOT / "project.yml")
    args = parser.parse_args()
    start = time.perf_counter()
    local_dir = args.local_dir if args.local_dir and args.local_dir.exists() else None
    assets = srsly.read_yaml(args.project)["assets"]
    missing, fetched = [], []
    for asset in assets:
        if args.only and not any(asset["dest"].startswith(p) for p in args.only):
            continue
        status = fetch(asset, local_dir, args.download)
        print(f"{asset['dest']}: {status}")
        if status == "missing":
            missing.append(asset["dest"])
        else:
            fetched.append(asset["dest"])
    if missing:
        sys.exit(f"error: {len(missing)} asset(s) neither in {args.local_dir} nor downloaded "
                 f"(give --download to fetch them from their URLs): {', '.join(missing)}")
    print(f"{len(fetched)} asset(s) in place under assets/, sha256-checked, in "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
