"""Check and install the learners (xgboost, lightgbm, catboost, scikit-learn, shap).

The dialog lists each learner with its pinned requirement (requirements.txt), what is installed
and whether it is missing or at another version. *Install* runs
``<QGIS python> -m pip install --upgrade --target <profile>/python/smdownscale-deps -r requirements.txt``
in a ``QProcess`` (asynchronous: the main thread only receives pip's output as it comes) and
streams that output into the dialog. ``--target`` works on PEP 668 systems (Debian 12, Ubuntu
24.04) where ``--user`` is refused, and needs no admin rights; the plugin appends that folder to
``sys.path`` when it loads (``__init__.py``). The equivalent command is shown to copy.

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
from qgis.PyQt.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView,
                                 QLabel, QLineEdit, QPlainTextEdit, QPushButton, QTableWidget,
                                 QTableWidgetItem, QVBoxLayout)

from ..resources import (REQUIREMENTS_FILE, add_deps_folder_to_sys_path, deps_folder, install_arguments,
                         install_command, learner_status, missing_learners, qgis_python, tr)

#: a QgsApplication property so the "learners missing" notice is shown once per QGIS session
_NOTICE_PROPERTY = "smdownscale_dependency_notice_shown"


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
    """Which learners are missing / at the wrong version, and an Install button."""

    COLUMNS = ("Package", "Required", "Installed", "State")

    def __init__(self, parent=None, python=None, target=None, requirements=None, import_names=None):
        super().__init__(parent)
        self.setObjectName("smdownscale_dependencies")
        self.setWindowTitle(tr("Soil moisture downscaling - dependencies"))
        self.resize(820, 560)
        self.python = python or qgis_python()
        self.target = target or deps_folder()
        self.requirements = requirements or REQUIREMENTS_FILE
        self.import_names = import_names
        self.process = None
        self.last_exit_code = None

        layout = QVBoxLayout(self)
        self.intro = QLabel(tr(
            "The learners are installed into <b>{}</b> for the Python QGIS runs (<tt>{}</tt>). "
            "Restart QGIS after installing.").format(self.target, self.python or tr("not found")))
        self.intro.setWordWrap(True)
        self.intro.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.intro)

        self.table = QTableWidget(0, len(self.COLUMNS), self)
        self.table.setHorizontalHeaderLabels([tr(c) for c in self.COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        layout.addWidget(self.table)

        layout.addWidget(QLabel(tr("Equivalent command (e.g. in a terminal or the OSGeo4W shell):")))
        command_row = QHBoxLayout()
        self.command = QLineEdit(self)
        self.command.setReadOnly(True)
        self.command.setText(install_command(self.python, self.target, self.requirements))
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

    # --- status -------------------------------------------------------------------------------
    def refresh(self):
        """Fill the table from package metadata (nothing is imported)."""
        add_deps_folder_to_sys_path(self.target)
        self.rows = learner_status(self.import_names)
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            values = (row["requirement"].split("==")[0], row["requirement"], row["installed"] or "-",
                      tr(row["state"]))
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                if c == 3 and row["state"] != "ok":
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
            self.status.setText(tr("{} of {} learner package(s) need installing: {}.").format(
                len(problems), len(self.rows), ", ".join(row["requirement"] for row in problems)))
        else:
            self.status.setText(tr("All learner packages are installed at the pinned versions."))
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
        args = install_arguments(self.python, self.target, self.requirements)
        self.output.appendPlainText("$ " + install_command(self.python, self.target, self.requirements))
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
