"""Lab rootfs customisation that needs no chroot."""

from __future__ import annotations

from pathlib import Path

from anywhere.lab import rootfs


def test_every_generator_is_masked_once(tmp_path: Path) -> None:
    shipped = tmp_path / "usr/lib/systemd/system-generators"
    shipped.mkdir(parents=True)
    for name in ("systemd-fstab-generator", "systemd-sysv-generator"):
        (shipped / name).write_text("#!/bin/sh\n")
    rootfs.mask_generators(tmp_path)
    rootfs.mask_generators(tmp_path)  # a second customisation pass changes nothing
    masks = tmp_path / "etc/systemd/system-generators"
    assert sorted(p.name for p in masks.iterdir()) == [
        "systemd-fstab-generator",
        "systemd-sysv-generator",
    ]
    assert all(p.readlink() == Path("/dev/null") for p in masks.iterdir())
