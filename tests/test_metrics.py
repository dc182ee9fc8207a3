"""The learner's logs: JSONL always, and wandb (the locked ``wandb`` extra) when a project is named."""

from shared.metrics import MetricsLogger, read_jsonl


def test_jsonl_and_an_offline_wandb_run_get_every_record(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no account and no network: wandb's own offline mode
    monkeypatch.setenv("WANDB_SILENT", "true")
    metrics = MetricsLogger(tmp_path, tensorboard=False, wandb_project="wsrl-test", wandb_config={"utd": 4})
    metrics.log(120, {"critic_loss": 0.5, "q": float("nan")}, prefix="learner/")
    metrics.close()
    import wandb

    # finish() returns before wandb's service process has written the record file's last block (CI once read
    # only the 7-byte header); teardown() waits for the service to exit, as the learner's exit does via atexit
    wandb.teardown()
    (row,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert row["step"] == 120 and row["learner/critic_loss"] == 0.5 and row["learner/q"] == "nan"
    (run,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = run.read_bytes()  # wandb's record file: the keys and the config travel in it as text
    assert b"learner/critic_loss" in data and b"utd" in data
