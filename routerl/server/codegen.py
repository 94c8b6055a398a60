"""Regenerate the Python gRPC code from ``proto/routerl/v1/router.proto``.

    python -m routerl.server.codegen            # rewrite routerl/server/proto/router_pb2*.py
    python -m routerl.server.codegen --check    # exit 1 when the committed code is out of date

protoc (from ``grpcio-tools``) writes ``routerl/v1/router_pb2*.py`` into a temporary directory;
the files are moved to ``routerl/server/proto/`` and the stub's absolute import
(``from routerl.v1 import router_pb2``) is made package-relative, so the generated package needs
nothing on ``sys.path``. The proto keeps its registered name ``routerl/v1/router.proto``, which is
what server reflection reports.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
PROTO_FILE = "routerl/v1/router.proto"
OUT_DIR = Path(__file__).resolve().parent / "proto"
GENERATED = ("router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py")

_ABSOLUTE_IMPORT = re.compile(r"^from routerl\.v1 import router_pb2 as ", re.MULTILINE)


def _protoc_include() -> str:
    """The directory of the well-known protos (google/protobuf/*.proto) shipped with grpcio-tools."""
    import grpc_tools

    return os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")


def generate(out_dir: str | Path = OUT_DIR) -> list[Path]:
    """Run protoc on the proto and write the fixed-up generated files into ``out_dir``."""
    try:
        from grpc_tools import protoc
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("grpcio-tools is not installed (pip install 'routerl[dev]')") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{_protoc_include()}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {PROTO_ROOT / PROTO_FILE}")
        written = []
        for name in GENERATED:
            text = (Path(tmp) / "routerl" / "v1" / name).read_text(encoding="utf-8")
            if name == "router_pb2_grpc.py":
                text, n = _ABSOLUTE_IMPORT.subn("from . import router_pb2 as ", text)
                if n != 1:
                    raise RuntimeError("unexpected protoc output: cannot find the router_pb2 import to fix")
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def stale_files(committed_dir: str | Path = OUT_DIR) -> list[str]:
    """Names of generated files that differ from a fresh generation (empty when up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        stale = []
        for name in GENERATED:
            fresh = (Path(tmp) / name).read_bytes()
            path = Path(committed_dir) / name
            if not path.exists() or path.read_bytes() != fresh:
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routerl.server.codegen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the committed code is up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"out of date: {', '.join(stale)}; run python -m routerl.server.codegen", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    for path in generate():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
