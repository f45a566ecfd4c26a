"""What every refusal of the dlhisto command must look like, for the tests that craft inputs."""


def assert_refused(result, message, out=None, status=2):
    """Exit ``status``, exactly one line on stderr holding ``message`` (no traceback, no "internal
    error"), and nothing left in the folder ``out``."""
    assert result.returncode == status, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    if out is not None:
        assert sorted(p.name for p in out.iterdir()) == [], "left behind"
