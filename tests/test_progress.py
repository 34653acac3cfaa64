"""course_lib.progress: headless bars write periodic lines to the progress file and one final line to the
notebook's output, never a widget."""

from __future__ import annotations

from course_lib import progress


def test_headless_bar_writes_lines_to_the_progress_file_and_one_final_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "progress.txt"
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(path))
    bar = progress.HeadlessTqdm(total=5, desc="harvest", mininterval=0)
    assert bar.mininterval == 15.0  # never more often than every 15 s, whatever the caller asks
    for _ in range(5):
        bar.update(1)
    bar.close()
    bar.close()  # closing twice writes nothing more
    err = capsys.readouterr().err
    assert err.count("harvest") == 1 and "5/5" in err
    lines = path.read_text().splitlines()
    assert lines and all("harvest" in line for line in lines) and "\r" not in path.read_text()


def test_without_a_progress_file_nothing_is_written_anywhere_but_the_final_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(progress.PROGRESS_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    for _ in progress.HeadlessTqdm(range(3), desc="loop"):
        pass
    assert capsys.readouterr().err.count("loop") == 1
    assert list(tmp_path.iterdir()) == []


def test_install_swaps_tqdm_auto(monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.auto.tqdm)
    monkeypatch.setattr(tqdm.auto, "trange", tqdm.auto.trange)
    progress.install_headless_tqdm()
    assert tqdm.auto.tqdm is progress.HeadlessTqdm
    assert isinstance(tqdm.auto.trange(2, disable=True), progress.HeadlessTqdm)
