"""A minimal ``qtbot`` (pytest-qt is not installed here): keep widgets alive, wait while the Qt
event loop runs. Import the fixture into a test module with ``from qtwait import qtbot``."""
import time

import pytest


class QtBot:
    def __init__(self):
        self.widgets = []

    def addWidget(self, widget):  # noqa: N802 (pytest-qt's name)
        self.widgets.append(widget)
        return widget

    @staticmethod
    def wait(ms):
        from qgis.PyQt.QtCore import QCoreApplication, QEventLoop

        end = time.monotonic() + ms / 1000.0
        while time.monotonic() < end:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 20)
            time.sleep(0.005)

    def waitUntil(self, predicate, timeout=5000):  # noqa: N802
        from qgis.PyQt.QtCore import QCoreApplication, QEventLoop

        end = time.monotonic() + timeout / 1000.0
        while True:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 20)
            if predicate():
                return
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout} ms waiting for {predicate}")
            time.sleep(0.005)


@pytest.fixture
def qtbot(qgis_app):
    bot = QtBot()
    yield bot
    for widget in bot.widgets:
        try:
            widget.close()
            widget.deleteLater()
        except RuntimeError:
            pass
