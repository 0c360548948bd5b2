"""Check and install the learners (xgboost, lightgbm, catboost, scikit-learn, shap) and, if
wanted, the optional packages (lleaves for faster prediction, dask + distributed for the
DASK_SCHEDULER option).

The dialog lists each package with its pinned requirement (requirements.txt), what is installed,
whether it is missing or at another version, and what it is for. The learners are required; the
optional packages (``resources.OPTIONAL_PACKAGES``) each have a check box (ticked by default where
they are available: lleaves has no Windows build, so its requirement marker leaves it out there)
and the plugin works without them. *Install* runs
``<QGIS python> -m pip install --upgrade --target <profile>/python/smdownscale-deps -c requirements.txt
<the learners and the ticked optional packages>`` (requirements.txt as constraints: every version,
also of what pip pulls in, is the pinned one) in a ``QProcess`` (asynchronous: the main thread
only receives pip's output as it comes) and streams that output into the dialog. ``--target``
works on PEP 668 systems (Debian 12, Ubuntu 24.04) where ``--user`` is refused, and needs no admin
rights; the plugin appends that folder to ``sys.path`` when it loads (``__init__.py``). The
equivalent command is shown to copy.

xgboost is pinned as ``xgboost`` (with its 469 MB ``nvidia-nccl-cu12`` GPU runtime on Linux), not
as PyPI's CPU-only ``xgboost-cpu``: ``xgboost-cpu==2.1.3`` installs and imports as ``xgboost`` and
works in a plain Python, but inside the QGIS 3.22 desktop its ``QuantileDMatrix`` aborts the whole
process (``munmap_chunk(): invalid pointer``, reproduced with the same deps folder where the
``xgboost`` wheel works).
"""
import os

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, Qt
from qgis.PyQt.QtGui import QFont, QGuiApplication
from qgis.PyQt.QtWidgets import (QAbstractItemView, QCheckBox, QDialog, QDialogButtonBox, QGroupBox,
                                 QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                                 QTableWidget, QTableWidgetItem, QVBoxLayout)

from ..resources import (OPTIONAL_PACKAGES, REQUIREMENTS_FILE, add_deps_folder_to_sys_path, deps_folder,
                         install_arguments, install_command, learner_requirement, learner_status,
                         missing_learners, qgis_python, requirement_applies, tr)

#: a QgsApplication property so the "learners missing" notice is shown once per QGIS session
_NOTICE_PROPERTY = "smdownscale_dependency_notice_shown"

#: what each required learner is for (the table's last column)
LEARNER_USES = {
    "xgboost": "required: base learner",
    "lightgbm": "required: base learner",
    "catboost": "required: base learner",
    "sklearn": "required: training",
    "shap": "required",
}
#: the optional groups of ``resources.OPTIONAL_PACKAGES``: (check box title, what it is for)
OPTIONAL_USES = {
    "compiled": ("Faster prediction",
                 "predicts LightGBM and XGBoost several times faster: a QuickScorer kernel (numba, "
                 "which shap needs anyway) and, for models with trees of more than 64 leaves, code "
                 "compiled per model (lleaves, with llvmlite) when a prediction is large enough to pay "
                 "for it; without them the boosters predict natively, with the same results (lleaves "
                 "has no Windows build)"),
    "dask": ("Dask scale-out",
             "needed only for the Dask scheduler option (DASK_SCHEDULER: local:N worker processes or "
             "a cluster) of Prepare, Train and Predict; without it they run in the QGIS process"),
}


def notify_missing_learners(iface, open_dialog, import_names=None):
    """Once per QGIS session: a message-bar notice naming the missing learners, with a button
    opening the dependency dialog. Returns the missing import names (empty: nothing shown)."""
    from qgis.core import QgsApplication

    missing = missing_learners(import_names)
    app = QgsApplication.instance()
    if not missing or app is None or app.property(_NOTICE_PROPERTY):
        return missing
    app.setProperty(_NOTICE_PROPERTY, True)
    from qgis.gui import QgsMessageBar

    bar = iface.messageBar()
    widget = QgsMessageBar.createMessage(
        tr("Soil moisture downscaling"),
        tr("The learner package(s) {} are not installed for the Python QGIS runs; training and "
           "prediction need them.").format(", ".join(missing)))
    button = QPushButton(tr("Check dependencies..."), widget)
    button.setObjectName("smdownscale_dependencies_notice_button")
    button.clicked.connect(lambda _checked=False: open_dialog())
    widget.layout().addWidget(button)
    bar.pushWidget(widget, Qgis.Warning, 0)
    return missing


class DependencyDialog(QDialog):
    """Which learners (and optional packages) are missing / at the wrong version, a check box per
    optional group, and an Install button."""

    COLUMNS = ("Package", "Required", "Installed", "State", "Used for")

    def __init__(self, parent=None, python=None, target=None, requirements=None, import_names=None,
                 optional=None):
        super().__init__(parent)
        self.setObjectName("smdownscale_dependencies")
        self.setWindowTitle(tr("Soil moisture downscaling - dependencies"))
        self.resize(940, 760)
        self.python = python or qgis_python()
        self.target = target or deps_folder()
        self.requirements = requirements or REQUIREMENTS_FILE
        self.import_names = import_names
        #: the optional groups offered (default every group of resources.OPTIONAL_PACKAGES)
        self.optional_groups = list(OPTIONAL_PACKAGES if optional is None else optional)
        self.rows, self.optional_rows = [], []
        self.process = None
        self.last_exit_code = None

        layout = QVBoxLayout(self)
        self.intro = QLabel(tr(
            "The learners (required) and the optional packages you tick are installed into <b>{}</b> "
            "for the Python QGIS runs (<tt>{}</tt>). Restart QGIS after installing.").format(
                self.target, self.python or tr("not found")))
        self.intro.setWordWrap(True)
        self.intro.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.intro)

        self.table = QTableWidget(0, len(self.COLUMNS), self)
        self.table.setHorizontalHeaderLabels([tr(c) for c in self.COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(len(self.COLUMNS) - 1, QHeaderView.Stretch)
        layout.addWidget(self.table)

        self.optional_boxes = {}
        if self.optional_groups:
            box = QGroupBox(tr("Optional packages (the plugin works without them)"), self)
            box_layout = QVBoxLayout(box)
            for group in self.optional_groups:
                title, use = OPTIONAL_USES.get(group, (group, ""))
                available = self.group_available(group)
                check = QCheckBox(tr("{}: {}").format(tr(title), ", ".join(OPTIONAL_PACKAGES[group])), box)
                check.setObjectName(f"smdownscale_optional_{group}")
                check.setChecked(available)
                check.setEnabled(available)
                check.toggled.connect(self._update_command)
                box_layout.addWidget(check)
                text = tr(use)
                text = text[:1].upper() + text[1:] + "."
                if not available:
                    text += " " + tr("Not available on this platform.")
                label = QLabel(text, box)
                label.setObjectName(f"smdownscale_optional_{group}_use")
                label.setWordWrap(True)
                label.setIndent(24)
                box_layout.addWidget(label)
                self.optional_boxes[group] = check
            layout.addWidget(box)

        layout.addWidget(QLabel(tr("Equivalent command (e.g. in a terminal or the OSGeo4W shell):")))
        command_row = QHBoxLayout()
        self.command = QLineEdit(self)
        self.command.setReadOnly(True)
        self._update_command()
        command_row.addWidget(self.command)
        self.copy_button = QPushButton(tr("Copy"), self)
        self.copy_button.clicked.connect(self.copy_command)
        command_row.addWidget(self.copy_button)
        layout.addLayout(command_row)

        self.output = QPlainTextEdit(self)
        self.output.setReadOnly(True)
        self.output.setObjectName("smdownscale_pip_output")
        font = QFont("monospace")
        font.setStyleHint(QFont.TypeWriter)
        self.output.setFont(font)
        layout.addWidget(self.output, 1)

        self.status = QLabel(self)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        buttons = QDialogButtonBox(self)
        self.install_button = buttons.addButton(tr("Install"), QDialogButtonBox.ActionRole)
        self.install_button.clicked.connect(self.install)
        self.cancel_button = buttons.addButton(tr("Stop"), QDialogButtonBox.ActionRole)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.refresh_button = buttons.addButton(tr("Check again"), QDialogButtonBox.ActionRole)
        self.refresh_button.clicked.connect(self.refresh)
        close = buttons.addButton(QDialogButtonBox.Close)
        close.clicked.connect(self.reject)
        layout.addWidget(buttons)
        self.refresh()

    # --- optional packages ----------------------------------------------------------------------
    @staticmethod
    def group_available(group):
        """False when a package of ``group`` has a requirement marker excluding this platform
        (lleaves on Windows)."""
        return all(requirement_applies(learner_requirement(name)) is not False for name in OPTIONAL_PACKAGES[group])

    def selected_optional(self):
        """The optional groups ticked (and available here), in :data:`OPTIONAL_PACKAGES` order."""
        return [group for group, check in self.optional_boxes.items() if check.isChecked() and check.isEnabled()]

    def _update_command(self, *_args):
        self.command.setText(install_command(self.python, self.target, self.requirements,
                                             optional=self.selected_optional()))

    # --- status -------------------------------------------------------------------------------
    def refresh(self):
        """Fill the table from package metadata (nothing is imported)."""
        add_deps_folder_to_sys_path(self.target)
        self.rows = learner_status(self.import_names)
        self.optional_rows = []
        for group in self.optional_groups:
            available = self.group_available(group)
            for row in learner_status(OPTIONAL_PACKAGES[group]):
                if not available and row["state"] == "missing":
                    row["state"] = "not available"
                self.optional_rows.append(dict(row, group=group))
        shown = self.rows + self.optional_rows
        self.table.setRowCount(len(shown))
        for r, row in enumerate(shown):
            if "group" in row:
                use = tr("optional: {}").format(tr(OPTIONAL_USES.get(row["group"], (row["group"],))[0]))
            else:
                use = tr(LEARNER_USES.get(row["import"], "required"))
            pin = row["requirement"].split(";")[0].strip()   # the marker is said in the optional box
            package = pin.split("==")[0]
            installed = row["installed"] or "-"
            if installed.startswith(package + " "):
                installed = installed[len(package) + 1:]
            values = (package, pin, installed, tr(row["state"]), use)
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(row["requirement"] if c == 1 else value)
                if c == 3 and row["state"] != "ok" and "group" not in row:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
        height += sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(height + 2)
        problems = [row for row in self.rows if row["state"] != "ok"]
        if problems:
            text = tr("{} of {} learner package(s) need installing: {}.").format(
                len(problems), len(self.rows), ", ".join(row["requirement"] for row in problems))
        else:
            text = tr("All learner packages are installed at the pinned versions.")
        optional = [row for row in self.optional_rows if row["state"] in ("missing", "wrong version")]
        if optional:
            text += " " + tr("Optional, not installed at the pinned version: {} (the plugin works "
                             "without them).").format(", ".join(row["requirement"].split(";")[0] for row in optional))
        self.status.setText(text)
        self.install_button.setEnabled(self.python is not None and not self.running())
        return self.rows

    def copy_command(self):
        QGuiApplication.clipboard().setText(self.command.text())

    # --- install ------------------------------------------------------------------------------
    def running(self):
        return self.process is not None and self.process.state() != QProcess.NotRunning

    def install(self):
        """Start pip in the background; its output is appended as it arrives."""
        if self.running() or not self.python:
            return False
        os.makedirs(self.target, exist_ok=True)
        optional = self.selected_optional()
        args = install_arguments(self.python, self.target, self.requirements, optional=optional)
        self.output.appendPlainText("$ " + install_command(self.python, self.target, self.requirements,
                                                           optional=optional))
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PIP_NO_INPUT", "1")
        env.remove("PYTHONPATH")  # pip resolves for the interpreter itself, not for QGIS's extra paths
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(tr("Installing... (pip runs in the background; you can keep working)"))
        self.process.start(args[0], args[1:])
        return True

    def cancel(self):
        if self.running():
            self.output.appendPlainText(tr("Stopping pip..."))
            self.process.kill()

    def _read_output(self):
        data = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        if data:
            self.output.moveCursor(self.output.textCursor().End)
            self.output.insertPlainText(data)
            self.output.ensureCursorVisible()

    def _error(self, error):
        if error == QProcess.FailedToStart:
            self.output.appendPlainText(tr("Could not start {}").format(self.python))
            self._finished(-1, QProcess.CrashExit)

    def _finished(self, exit_code, _status=None):
        self._read_output()
        self.last_exit_code = exit_code
        self.cancel_button.setEnabled(False)
        self.refresh()
        if exit_code == 0:
            message = tr("Installed into {}. Restart QGIS so that every algorithm uses the new packages.").format(
                self.target)
            level = Qgis.Info
        else:
            message = tr("pip stopped with exit code {}; see its output above.").format(exit_code)
            level = Qgis.Warning
        self.status.setText(self.status.text() + "\n" + message)
        self.output.appendPlainText(message)
        QgsMessageLog.logMessage(message, "smdownscale", level)
        self.install_button.setEnabled(self.python is not None)

    def closeEvent(self, event):  # noqa: N802 (Qt API name)
        self.cancel()
        super().closeEvent(event)
