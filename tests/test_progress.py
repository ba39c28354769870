from mlmprep.transforms.beam.progress import Progress


def test_progress_reports_running_totals_at_most_every_interval(capsys):
    quiet = Progress("read", interval_s=3600)
    quiet.update(documents=5)
    assert capsys.readouterr().err == ""
    progress = Progress("read", interval_s=0)
    progress.update(documents=2, characters=1000)
    progress.update(documents=3, characters=500)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert (
        "documents 5" in lines[-1]
        and "characters 1,500" in lines[-1]
        and lines[-1].startswith("mlmprep [read")
    )
