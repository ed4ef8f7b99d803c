"""``workbench data list | prepare NAME... [data_root=DIR] [download=true]``."""

from __future__ import annotations

from workbench.errors import WorkbenchError, unknown


def main(argv: list[str]) -> int:
    from workbench.data import DATASETS, is_available, prepare, resolve_data_root

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: workbench data list [data_root=DIR]")
        print("       workbench data prepare NAME... [data_root=DIR] [download=true]")
        return 0
    from workbench.command import parse_options

    sub = argv[0]
    names, opts = parse_options(argv[1:], {"data_root": str, "download": bool}, "workbench data")
    root = opts.get("data_root")
    download = opts.get("download", False)
    if sub == "list":
        print(f"data root: {resolve_data_root(root)}")
        print(f"{'name':<16} {'classes':>7} {'shape':<12} {'here':<5} description")
        for name, info in DATASETS.items():
            shape = f"{info.in_channels}x{info.image_size[0]}x{info.image_size[1]}"
            here = "yes" if is_available(name, root) else "no"
            print(f"{name:<16} {info.num_classes:>7} {shape:<12} {here:<5} {info.description}")
        return 0
    if sub == "prepare":
        if not names:
            raise WorkbenchError(
                "workbench data prepare needs dataset names, e.g. workbench data prepare fashion-mnist"
            )
        for name in names:
            if name not in DATASETS:
                raise unknown("dataset", name, DATASETS)
        for name in names:
            path = prepare(name, data_root=root, download=download)
            note = _verify(name, root)
            print(f"{name}: ready at {path}" + (f" ({note})" if note else ""))
        return 0
    raise WorkbenchError(f"unknown data command '{sub}'; valid: list, prepare")


def _verify(name: str, root: str | None) -> str:
    """Read a dataset whose source can check its files (pickled releases: safely, structure checked) and
    return its note; a tampered or damaged copy raises, so it is never called ready."""
    from workbench.data import dataset_info, resolve_data_root
    from workbench.data.registry import SOURCES

    verify = getattr(SOURCES[name], "verify", None)
    return verify(dataset_info(name), resolve_data_root(root)) if verify is not None else ""
