"""A dock to step through the dates of a soil-moisture series layer.

A series is one multi-band GeoTIFF whose band descriptions are ISO dates (DESIGN.md). QGIS 3.22
has no per-band temporal mode, so the dock switches the band its renderer draws: a slider and a
date combo (and previous/next buttons) over the bands of the selected layer, the date shown in
large type; optionally the map canvas' temporal controller drives it (the band whose date is the
latest one not after the start of the controller's current range).
"""
import datetime as _dt

from qgis.core import QgsMapLayerType, QgsProject
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QFont
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QHBoxLayout, QLabel, QPushButton, QSlider,
                                 QVBoxLayout, QWidget)

from ..resources import band_dates, series_layer_name, tr  # noqa: F401 - re-exported

def current_band(layer):
    """The band the layer's renderer draws (1-based), None for renderers without one band."""
    renderer = layer.renderer()
    if renderer is None:
        return None
    for getter in ("band", "grayBand", "inputBand"):
        if hasattr(renderer, getter):
            try:
                value = getattr(renderer, getter)()
            except TypeError:
                continue
            if isinstance(value, int) and value > 0:
                return value
    return None


def set_band(layer, band):
    """Make the layer's renderer draw ``band`` (pseudocolour, grey, paletted); True when it did."""
    renderer = layer.renderer()
    if renderer is None:
        return False
    done = False
    for setter in ("setBand", "setGrayBand", "setInputBand"):
        if hasattr(renderer, setter):
            result = getattr(renderer, setter)(band)
            done = result is not False
            break
    if not done:
        return False
    layer.triggerRepaint()
    layer.emitStyleChanged()
    return True


class DateDock(QDockWidget):
    """Slider + date combo switching the band of the selected series layer."""

    dateChanged = pyqtSignal(str)  # noqa: N815 (Qt naming)

    def __init__(self, iface=None, parent=None):
        super().__init__(tr("Soil moisture dates"), parent)
        self.setObjectName("smdownscale_date_dock")
        self.iface = iface
        self.layer = None
        self.dates = []
        self._updating = False

        body = QWidget(self)
        layout = QVBoxLayout(body)
        self.layer_label = QLabel(tr("Select a soil-moisture series layer (bands named by date)."), body)
        self.layer_label.setWordWrap(True)
        layout.addWidget(self.layer_label)
        self.date_label = QLabel("-", body)
        font = QFont(self.date_label.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.date_label.setFont(font)
        self.date_label.setAlignment(Qt.AlignCenter)
        layout.addWidget(self.date_label)
        self.slider = QSlider(Qt.Horizontal, body)
        self.slider.setObjectName("smdownscale_date_slider")
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setPageStep(7)
        self.slider.valueChanged.connect(self._slider_moved)
        layout.addWidget(self.slider)
        row = QHBoxLayout()
        self.previous_button = QPushButton("<", body)
        self.previous_button.setToolTip(tr("Previous date"))
        self.previous_button.clicked.connect(lambda _c=False: self.step(-1))
        row.addWidget(self.previous_button)
        self.combo = QComboBox(body)
        self.combo.setObjectName("smdownscale_date_combo")
        self.combo.currentIndexChanged.connect(self._combo_changed)
        row.addWidget(self.combo, 1)
        self.next_button = QPushButton(">", body)
        self.next_button.setToolTip(tr("Next date"))
        self.next_button.clicked.connect(lambda _c=False: self.step(1))
        row.addWidget(self.next_button)
        layout.addLayout(row)
        self.follow_temporal = QCheckBox(tr("Follow the temporal controller"), body)
        self.follow_temporal.setToolTip(tr("Show the date at the start of the map's current time range "
                                           "(View > Panels > Temporal Controller)."))
        layout.addWidget(self.follow_temporal)
        layout.addStretch(1)
        self.setWidget(body)

        self._connections = []
        if iface is not None:
            self._connect(iface.currentLayerChanged, self.set_layer)
            canvas = iface.mapCanvas() if hasattr(iface, "mapCanvas") else None
            if canvas is not None and hasattr(canvas, "temporalRangeChanged"):
                self._connect(canvas.temporalRangeChanged, self._temporal_changed)
        self._connect(QgsProject.instance().layerWillBeRemoved, self._layer_removed)
        self.set_layer(iface.activeLayer() if iface is not None else None)

    def _connect(self, signal, slot):
        signal.connect(slot)
        self._connections.append((signal, slot))

    def disconnect_signals(self):
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        self._connections = []

    # --- layer --------------------------------------------------------------------------------
    def set_layer(self, layer):
        """Follow ``layer`` (None or a layer that is not a dated series: the dock is disabled)."""
        dates = band_dates(layer) if layer is not None and layer.type() == QgsMapLayerType.RasterLayer else None
        self.layer = layer if dates else None
        self.dates = dates or []
        self._updating = True
        self.combo.clear()
        self.combo.addItems(self.dates)
        self.slider.setRange(0, max(len(self.dates) - 1, 0))
        self._updating = False
        enabled = bool(self.dates)
        for widget in (self.slider, self.combo, self.previous_button, self.next_button):
            widget.setEnabled(enabled)
        if not enabled:
            self.layer_label.setText(tr("Select a soil-moisture series layer (bands named by date)."))
            self.date_label.setText("-")
            return False
        self.layer_label.setText(tr("<b>{}</b><br>{} dates, {} to {}").format(
            layer.name(), len(self.dates), self.dates[0], self.dates[-1]))
        band = current_band(layer) or 1
        self.show_index(min(max(band - 1, 0), len(self.dates) - 1))
        return True

    def _layer_removed(self, layer_id):
        if self.layer is not None and self.layer.id() == layer_id:
            self.set_layer(None)

    # --- date ---------------------------------------------------------------------------------
    def current_date(self):
        index = self.combo.currentIndex()
        return self.dates[index] if 0 <= index < len(self.dates) else None

    def show_index(self, index):
        """Draw band ``index + 1`` of the layer and show its date."""
        if not self.dates or not 0 <= index < len(self.dates):
            return False
        self._updating = True
        self.slider.setValue(index)
        self.combo.setCurrentIndex(index)
        self._updating = False
        self.date_label.setText(self.dates[index])
        self.previous_button.setEnabled(index > 0)
        self.next_button.setEnabled(index < len(self.dates) - 1)
        changed = set_band(self.layer, index + 1) if current_band(self.layer) != index + 1 else True
        if changed and self.iface is not None and hasattr(self.iface, "layerTreeView"):
            view = self.iface.layerTreeView()
            if view is not None and hasattr(view, "refreshLayerSymbology"):
                view.refreshLayerSymbology(self.layer.id())
        self.dateChanged.emit(self.dates[index])
        return changed

    def show_date(self, date):
        """Show ``date`` (ISO) or the latest date not after it."""
        if not self.dates:
            return False
        date = str(date)[:10]
        index = max((i for i, d in enumerate(self.dates) if d <= date), default=0)
        return self.show_index(index)

    def step(self, delta):
        return self.show_index(min(max(self.combo.currentIndex() + delta, 0), len(self.dates) - 1))

    def _slider_moved(self, value):
        if not self._updating:
            self.show_index(value)

    def _combo_changed(self, index):
        if not self._updating and index >= 0:
            self.show_index(index)

    def _temporal_changed(self):
        if not self.follow_temporal.isChecked() or not self.dates or self.iface is None:
            return
        begin = self.iface.mapCanvas().temporalRange().begin()
        if begin.isValid():
            date = begin.date()
            self.show_date(_dt.date(date.year(), date.month(), date.day()).isoformat())
