"""The dependency dialog (ui/dependencies.py) and the learner helpers of resources.py, in a real
(offscreen) QGIS: a fake missing package, the copyable command, pip streamed from a QProcess
without blocking the main thread, the once-per-session notice and the sys.path folder."""
import os
import stat
import sys
import time

from qtwait import qtbot  # noqa: F401 (fixture)

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")


def _save(widget, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    widget.grab().save(os.path.join(ARTIFACTS, name))


def test_requirements_pins_and_pip_names(qgis_app, tmp_path, monkeypatch):
    import smdownscale.resources as resources
    from smdownscale.resources import learner_requirement, pip_requirement

    assert learner_requirement("xgboost") == "xgboost==2.1.3"
    assert pip_requirement("xgboost") == "xgboost==2.1.3"
    # whichever xgboost distribution requirements.txt pins is the one named
    pinned = tmp_path / "requirements.txt"
    pinned.write_text("xgboost-cpu==2.1.3  # CPU build\nlleaves==1.3.0; sys_platform != 'win32'\n")
    monkeypatch.setattr(resources, "REQUIREMENTS_FILE", str(pinned))
    assert learner_requirement("xgboost") == "xgboost-cpu==2.1.3"
    monkeypatch.undo()
    assert pip_requirement("sklearn") == "scikit-learn==1.5.2"
    assert learner_requirement("sklearn") == "scikit-learn==1.5.2"


def test_status_reports_missing_and_wrong_versions(qgis_app, monkeypatch):
    import smdownscale.resources as resources

    rows = {row["import"]: row for row in resources.learner_status()}
    assert set(rows) == {"xgboost", "lightgbm", "catboost", "sklearn", "shap"}
    assert rows["lightgbm"]["state"] == "ok" and rows["lightgbm"]["installed"] == "lightgbm 4.5.0"
    # xgboost is provided by xgboost (GPU build, .venv) or xgboost-cpu: either is accepted
    assert rows["xgboost"]["state"] == "ok" and rows["xgboost"]["installed"].endswith("2.1.3")
    fake = resources.learner_status(["smd_fake_learner"])[0]
    assert fake == {"import": "smd_fake_learner", "requirement": "smd_fake_learner", "installed": "",
                    "state": "missing"}
    monkeypatch.setattr(resources, "learner_requirement", lambda name: "catboost==0.0.1")
    assert resources.learner_status(["catboost"])[0]["state"] == "wrong version"


def test_install_command_names_qgis_python_target_and_numpy_pin(qgis_app, tmp_path):
    import numpy

    from smdownscale.resources import REQUIREMENTS_FILE, install_arguments, install_command, qgis_python

    python = qgis_python()
    assert os.path.basename(python).startswith("python") and "shims" not in python
    args = install_arguments(python, str(tmp_path / "deps"))
    assert args[:4] == [python, "-m", "pip", "install"]
    assert args[args.index("--target") + 1] == str(tmp_path / "deps")
    assert args[args.index("-c") + 1] == REQUIREMENTS_FILE   # every version is the pinned one
    assert f"numpy=={numpy.__version__}" in args          # what QGIS already imports
    assert "--user" not in args
    assert install_command(python, str(tmp_path / "my deps")).count("'") >= 2   # quoted path


OPTIONAL_NAMES = ["lleaves", "numba", "llvmlite", "dask", "distributed"]


def _requirement_lines(names):
    """``{name: line}`` of requirements.txt, read here independently of resources.py."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
    lines = {}
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        name = line.split("==", 1)[0].strip()
        if "==" in line and name in names:
            lines[name] = line
    return lines


def _names(args):
    """The package names of an install command (after ``-c requirements.txt``, before the ABI pins)."""
    rest = args[args.index("-c") + 2:]
    return [a for a in rest if "==" not in a]


def test_optional_packages_are_installed_only_when_chosen_at_the_pins(qgis_app, tmp_path, monkeypatch):
    import smdownscale.resources as resources
    from smdownscale.resources import OPTIONAL_PACKAGES, install_arguments, install_packages, learner_status

    assert OPTIONAL_PACKAGES == {"compiled": tuple(OPTIONAL_NAMES[:3]), "dask": tuple(OPTIONAL_NAMES[3:])}
    learners = ["scikit-learn", "xgboost", "lightgbm", "catboost", "shap"]
    everything = _names(install_arguments("python3", str(tmp_path), pins=[]))
    assert set(learners) <= set(everything)
    assert set(OPTIONAL_NAMES) <= set(everything)                          # default: every group
    assert _names(install_arguments("python3", str(tmp_path), pins=[], optional=["dask"])) == \
        [n for n in everything if n not in ("lleaves", "numba", "llvmlite")]
    only_learners = _names(install_arguments("python3", str(tmp_path), pins=[], optional=()))
    assert set(learners) <= set(only_learners)
    assert not set(OPTIONAL_NAMES) & set(only_learners)
    # versions are never written into the command: requirements.txt (-c) is their one home
    args = install_arguments("python3", str(tmp_path), pins=["numpy==1.24.2"])
    assert [a for a in args if "==" in a] == ["numpy==1.24.2"] and "numpy" not in _names(args)
    with __import__("pytest").raises(ValueError, match="unknown optional"):
        install_packages(optional=["gpu"])

    # the pins the dialog shows are requirements.txt's lines, markers included; versions compare
    # without the marker (.venv has them at the pins)
    rows = {row["import"]: row for row in learner_status(OPTIONAL_NAMES)}
    assert {name: row["requirement"] for name, row in rows.items()} == _requirement_lines(OPTIONAL_NAMES)
    assert rows["lleaves"]["requirement"].endswith('; sys_platform != "win32"')
    assert {row["state"] for row in rows.values()} == {"ok"}, rows

    # a line whose marker excludes this platform is left out (lleaves on Windows)
    monkeypatch.setattr(sys, "platform", "win32")
    assert resources.requirement_applies('lleaves==1.3.0; sys_platform != "win32"') is False
    assert "lleaves" not in install_packages() and "dask" in install_packages()
    monkeypatch.undo()
    # no marker parser importable: the marker goes to pip, which evaluates it
    monkeypatch.setattr(resources, "requirement_applies", lambda line: None if ";" in line else True)
    assert "lleaves; sys_platform != 'win32'" in install_packages()
    monkeypatch.undo()
    custom = tmp_path / "requirements.txt"
    custom.write_text('xgboost==2.1.3\nfoo==1.0; sys_platform == "no-such-os"\nbar>=2  # comment\n')
    assert install_packages(str(custom)) == ["xgboost", "bar"]


def test_qgis_python_is_never_a_shim_from_path(qgis_app, tmp_path, monkeypatch):
    """Inside the desktop sys.executable may be a pyenv shim found on PATH: it lies outside this
    Python's prefix, so the interpreter beside sys.exec_prefix is used instead."""
    from smdownscale.resources import qgis_python

    monkeypatch.delenv("SMDOWNSCALE_PYTHON", raising=False)
    shim = tmp_path / ".pyenv" / "shims" / "python3"
    shim.parent.mkdir(parents=True)
    shim.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(shim))
    found = qgis_python()
    assert found != str(shim) and os.path.isfile(found)
    assert os.path.realpath(os.path.dirname(os.path.dirname(found))) == os.path.realpath(sys.exec_prefix)


def test_deps_folder_is_appended_to_sys_path(qgis_app, tmp_path, monkeypatch):
    from smdownscale.resources import DEPS_FOLDER_NAME, add_deps_folder_to_sys_path, deps_folder

    monkeypatch.delenv("SMDOWNSCALE_DEPS", raising=False)
    assert deps_folder(str(tmp_path)) == str(tmp_path / DEPS_FOLDER_NAME)
    folder = tmp_path / DEPS_FOLDER_NAME
    assert add_deps_folder_to_sys_path(str(folder)) is None      # not there yet: nothing added
    folder.mkdir()
    (folder / "smd_fake_learner.py").write_text("VALUE = 42\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert add_deps_folder_to_sys_path(str(folder)) == str(folder)
    assert sys.path[-1] == str(folder)                           # last: Debian's numpy & co win
    add_deps_folder_to_sys_path(str(folder))
    assert sys.path.count(str(folder)) == 1
    import smd_fake_learner

    assert smd_fake_learner.VALUE == 42
    sys.modules.pop("smd_fake_learner", None)


def _fake_pip(tmp_path, exit_code=0, lines=5, delay=0.2):
    """An executable standing in for the QGIS Python: prints lines slowly, like pip."""
    script = tmp_path / "python3"
    script.write_text("#!/bin/sh\n"
                      f"for i in $(seq 1 {lines}); do echo \"Collecting package $i\"; sleep {delay}; done\n"
                      "echo \"args: $*\"\n"
                      f"exit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_dialog_lists_a_fake_missing_package_and_streams_install(qgis_app, qtbot, tmp_path):
    from qgis.PyQt.QtCore import QTimer

    from smdownscale.ui.dependencies import DependencyDialog

    python = _fake_pip(tmp_path)
    target = str(tmp_path / "deps")
    dialog = DependencyDialog(python=python, target=target, import_names=["lightgbm", "smd_fake_learner"],
                              optional=())
    qtbot.addWidget(dialog)
    dialog.show()
    table = dialog.table
    assert table.rowCount() == 2 and not dialog.optional_boxes
    assert [table.item(r, 3).text() for r in range(2)] == ["ok", "missing"]
    assert table.item(1, 3).font().bold()
    assert "1 of 2" in dialog.status.text() and "smd_fake_learner" in dialog.status.text()
    assert dialog.command.text().startswith(python + " -m pip install")
    assert "--target " + target in dialog.command.text()
    _save(dialog, "dependencies_dialog.png")

    beats, last = [], [time.monotonic()]

    def beat():
        now = time.monotonic()
        beats.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(beat)
    timer.start(20)
    assert dialog.install() is True
    assert dialog.running() and not dialog.install_button.isEnabled()
    qtbot.waitUntil(lambda: "Collecting package 2" in dialog.output.toPlainText(), timeout=5000)
    assert dialog.running()                                   # output arrives while pip runs
    qtbot.waitUntil(lambda: not dialog.running() and dialog.last_exit_code is not None, timeout=10000)
    timer.stop()
    assert dialog.last_exit_code == 0
    text = dialog.output.toPlainText()
    assert "Collecting package 5" in text and "--target " + target in text and "Restart QGIS" in text
    assert max(beats) < 0.5, max(beats)                        # the main thread was never blocked
    _save(dialog, "dependencies_dialog_installed.png")


def test_dialog_offers_the_optional_packages_with_their_pins(qgis_app, qtbot, tmp_path, monkeypatch):
    from smdownscale.resources import REQUIREMENTS_FILE
    from smdownscale.ui.dependencies import OPTIONAL_USES, DependencyDialog

    python = _fake_pip(tmp_path, lines=1, delay=0)
    target = str(tmp_path / "deps")
    dialog = DependencyDialog(python=python, target=target, import_names=["lightgbm", "smd_fake_learner"])
    qtbot.addWidget(dialog)
    dialog.show()
    table = dialog.table
    listed = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert listed == ["lightgbm", "smd_fake_learner", "lleaves", "numba", "llvmlite", "dask", "distributed"]
    pins = _requirement_lines(OPTIONAL_NAMES)
    assert [table.item(r, 1).text() for r in range(2, 7)] == [pins[n].split(";")[0].strip() for n in OPTIONAL_NAMES]
    assert table.item(2, 1).toolTip() == pins["lleaves"] and 'sys_platform != "win32"' in pins["lleaves"]
    uses = [table.item(r, 4).text() for r in range(table.rowCount())]
    assert uses[0].startswith("required") and all(u.startswith("optional: ") for u in uses[2:])
    assert all(not table.item(r, 3).font().bold() for r in range(2, 7))   # optional: never a problem
    assert [row["import"] for row in dialog.rows] == ["lightgbm", "smd_fake_learner"]  # the learners only
    # one check box per optional group, ticked, with what it is for; the status counts only learners
    assert set(dialog.optional_boxes) == {"compiled", "dask"}
    for group, check in dialog.optional_boxes.items():
        assert check.isChecked() and check.isEnabled() and OPTIONAL_USES[group][0] in check.text()
    from qgis.PyQt.QtWidgets import QLabel

    compiled_use = dialog.findChild(QLabel, "smdownscale_optional_compiled_use").text()
    dask_use = dialog.findChild(QLabel, "smdownscale_optional_dask_use").text()
    assert "LightGBM" in compiled_use and "Windows" in compiled_use
    assert "DASK_SCHEDULER" in dask_use and "without it" in dask_use
    assert "1 of 2" in dialog.status.text()
    command = dialog.command.text()
    assert f"-c {REQUIREMENTS_FILE} " in command and " lleaves " in command and " dask distributed " in command
    dialog.optional_boxes["dask"].setChecked(False)             # the command follows the boxes
    assert " lleaves " in dialog.command.text() and "dask" not in dialog.command.text()
    dialog.install()
    qtbot.waitUntil(lambda: dialog.last_exit_code is not None, timeout=10000)
    pip_args = next(line for line in dialog.output.toPlainText().splitlines() if line.startswith("args: "))
    assert " lleaves " in pip_args and "distributed" not in pip_args and "--target " + target in pip_args
    _save(dialog, "dependencies_dialog_optional.png")

    # where lleaves has no build (its marker: Windows) its box is off and says so
    monkeypatch.setattr(sys, "platform", "win32")
    windows = DependencyDialog(python=python, target=target, import_names=["lightgbm"])
    qtbot.addWidget(windows)
    box = windows.optional_boxes["compiled"]
    assert not box.isEnabled() and not box.isChecked() and windows.optional_boxes["dask"].isChecked()
    assert windows.selected_optional() == ["dask"] and "lleaves" not in windows.command.text()
    assert "Not available on this platform" in windows.findChild(QLabel, "smdownscale_optional_compiled_use").text()


def test_missing_dask_message_names_the_dialog(qgis_app, monkeypatch):
    """core cannot import QGIS, so it names the dialog as text: the menu entry and box must exist."""
    import pytest

    from smdownscale.core import cluster
    from smdownscale.core.common import SmdError
    from smdownscale.plugin import MENU
    from smdownscale.ui.dependencies import OPTIONAL_USES

    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed -> ImportError
    with pytest.raises(SmdError) as raised:
        with cluster.dask_client("local:2"):
            pass
    message = str(raised.value)
    assert f"Raster > {MENU} > Check dependencies..." in message
    assert f"'{OPTIONAL_USES['dask'][0]}'" in message and "requirements.txt" in message


def test_dialog_reports_a_failed_install_and_can_stop_it(qgis_app, qtbot, tmp_path):
    from smdownscale.ui.dependencies import DependencyDialog

    dialog = DependencyDialog(python=_fake_pip(tmp_path, exit_code=1, lines=1, delay=0),
                              target=str(tmp_path / "deps"), import_names=["smd_fake_learner"])
    qtbot.addWidget(dialog)
    dialog.install()
    qtbot.waitUntil(lambda: dialog.last_exit_code is not None, timeout=10000)
    assert dialog.last_exit_code == 1 and "exit code 1" in dialog.status.text()
    assert dialog.install_button.isEnabled()

    slow = DependencyDialog(python=_fake_pip(tmp_path, lines=100, delay=0.1),
                            target=str(tmp_path / "deps"), import_names=["smd_fake_learner"])
    qtbot.addWidget(slow)
    slow.install()
    qtbot.waitUntil(lambda: "Collecting package 1" in slow.output.toPlainText(), timeout=5000)
    slow.cancel()
    qtbot.waitUntil(lambda: not slow.running(), timeout=5000)
    assert slow.last_exit_code != 0


def test_missing_learner_notice_once_per_session(qgis_app, qgis_iface, monkeypatch):
    from qgis.core import QgsApplication

    import smdownscale.ui.dependencies as dependencies

    pushed = []
    monkeypatch.setattr(qgis_iface.messageBar(), "pushWidget",
                        lambda widget, level=0, duration=0: pushed.append(widget), raising=False)
    QgsApplication.instance().setProperty(dependencies._NOTICE_PROPERTY, False)
    opened = []
    assert dependencies.notify_missing_learners(qgis_iface, lambda: opened.append(1),
                                                ["xgboost", "smd_fake_learner"]) == ["smd_fake_learner"]
    assert len(pushed) == 1
    dependencies.notify_missing_learners(qgis_iface, lambda: None, ["smd_fake_learner"])
    assert len(pushed) == 1                                      # once per session
    from qgis.PyQt.QtWidgets import QPushButton

    button = pushed[0].findChild(QPushButton, "smdownscale_dependencies_notice_button")
    assert button.text() == "Check dependencies..."
    button.click()
    assert opened == [1]
    QgsApplication.instance().setProperty(dependencies._NOTICE_PROPERTY, False)
    assert dependencies.notify_missing_learners(qgis_iface, lambda: None, ["xgboost"]) == []
    assert len(pushed) == 1                                      # nothing missing: no notice
    QgsApplication.instance().setProperty(dependencies._NOTICE_PROPERTY, True)


def test_learners_are_not_imported_by_the_status_check(qgis_app):
    import subprocess

    code = ("import sys\n"
            f"sys.path.insert(0, {os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.plugin-path')!r})\n"
            "from qgis.core import QgsApplication\n"
            "app = QgsApplication([], False); app.initQgis()\n"
            "from smdownscale.resources import learner_status\n"
            "rows = learner_status()\n"
            "heavy = [m for m in ('xgboost', 'lightgbm', 'catboost', 'sklearn', 'shap') if m in sys.modules]\n"
            "print(sorted({row['state'] for row in rows}), 'HEAVY=' + ','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("['ok'] HEAVY="), done.stdout
