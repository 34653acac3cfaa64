import json

import nbformat

from course_lib import cli


def _write_nb(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = "workshop"\nSEED = 0\nOUT_DIR = "x"\nDEVICE = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_run_reports_failing_cell_and_builds_report(tmp_path, capsys):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write_nb(nbdir / "01_good.ipynb", (
        "import json, os\nos.makedirs(OUT_DIR + '/figures', exist_ok=True)\n"
        "json.dump({'profile': PROFILE, 'answer': 42}, open(OUT_DIR + '/metrics.json', 'w'))"
    ))
    _write_nb(nbdir / "02_bad.ipynb", "raise ValueError('deliberate failure')")
    out = tmp_path / "outputs"
    code = cli.main(["run", str(nbdir / "01_good.ipynb"), str(nbdir / "02_bad.ipynb"),
                     "--profile", "smoke", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "02_bad" in err and "deliberate failure" in err and "raise ValueError" in err
    good = json.loads((out / "01_good" / "run.json").read_text())
    assert good["ok"] and good["profile"] == "smoke"
    assert json.loads((out / "01_good" / "metrics.json").read_text())["answer"] == 42
    assert (out / "01_good" / "01_good.ipynb").exists()
    page = (out / "index.html").read_text()
    assert "01_good" in page and "passed" in page and "FAILED" in page and "42" in page
