"""The KVM probe: its test boot is a real one (it succeeds under TCG), and its verdict is used."""

from apbuild.qemu import choose_accel, kernel_boots


def test_probe_boot_detects_a_running_kernel(vm_build):
    project, result = vm_build
    assert kernel_boots(project.board, result.boot_files["kernel"], "tcg", timeout=120)


def test_auto_picks_an_accelerator_that_was_proven(vm_build, tmp_path, monkeypatch):
    project, result = vm_build
    monkeypatch.setenv("APBUILD_QEMU_ACCEL", "auto")
    chosen = choose_accel(project.board, result.boot_files["kernel"], tmp_path)
    assert chosen in ("tcg", "kvm")
    if chosen == "kvm":
        assert kernel_boots(project.board, result.boot_files["kernel"], "kvm", timeout=60)
