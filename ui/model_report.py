"""A dialog that shows what a model file knows about its own accuracy (the paper's Table 3).

Reads only the verified manifest (core.modelfile.read_manifest): no learner is loaded, so it
opens instantly and works even where the ML packages are missing.
"""
import math

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QFont
from qgis.PyQt.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QLabel, QTableWidget,
                                 QTableWidgetItem, QVBoxLayout)

from ..core.common import SmdError
from ..core.modelfile import read_manifest
from ..core.signing import verify_signature
from ..core.train import ROW_FIELDS, ROW_HEADERS, format_value


def best_test_rows(rows):
    """Indexes of the row with the lowest test RMSE in each partition (shown in bold)."""
    best = {}
    for index, row in enumerate(rows):
        value = row.get("rmse_test")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        current = best.get(row["partition"])
        if current is None or value < rows[current]["rmse_test"]:
            best[row["partition"]] = index
    return set(best.values())


def summary_text(manifest):
    """Plain-text summary of a manifest: predictors, dates, partitions, fallbacks, libraries."""
    predictors = [p["name"] + (" (categorical)" if p.get("kind") == "categorical" else "")
                  for p in manifest.get("predictors", [])]
    dates = manifest.get("dates") or []
    partitions = (manifest.get("partitions") or {}).get("names") or []
    fallback = (manifest.get("extra") or {}).get("fallback") or []
    lines = [
        f"Predictors ({len(predictors)}): {', '.join(predictors)}",
        f"Training dates: {len(dates)}" + (f" ({dates[0]} to {dates[-1]})" if dates else ""),
        f"Partitions: {', '.join(partitions) if partitions else 'none (one global model)'}",
        f"Global (without partition) model: {'yes' if manifest.get('global_model') else 'no'}",
    ]
    if fallback:
        lines.append(f"Partitions predicted by the global model (too few samples): {', '.join(map(str, fallback))}")
    versions = manifest.get("library_versions") or {}
    if versions:
        lines.append("Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    return "\n".join(lines)


def signature_text(info):
    """One line describing a model file's signature status (core.signing.signature_status)."""
    status = info.get("status")
    who = info.get("key_id") or "?"
    if info.get("signer"):
        who += f" ({info['signer']})"
    if status == "trusted":
        return f"Signature: valid, by trusted key {who}"
    if status == "untrusted":
        return f"Signature: by key {who}, which is not among the trusted keys"
    if status == "signed":
        return f"Signature: by key {who}; not checked (no trusted keys set in smdownscale/trusted_keys)"
    return "Signature: none (unsigned; Predict with REQUIRE_SIGNED refuses it)"


def _signature_line(path):
    try:
        from ..resources import trusted_key_paths

        return signature_text(verify_signature(path, trusted_key_paths()))
    except SmdError as err:
        return f"Signature: {err}"


class ModelReportDialog(QDialog):
    """Choose a model file; see its Table-3 accuracy, partitions, predictors and library versions."""

    def __init__(self, parent=None, model_path=None):
        super().__init__(parent)
        self.setWindowTitle(self.tr("Soil moisture model report"))
        self.resize(820, 480)
        layout = QVBoxLayout(self)
        self.file_widget = QgsFileWidget(self)
        self.file_widget.setFilter(self.tr("smdownscale model (*.zip);;All files (*)"))
        self.file_widget.fileChanged.connect(self.load)
        layout.addWidget(self.file_widget)
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.summary)
        self.table = QTableWidget(0, len(ROW_FIELDS), self)
        self.table.setHorizontalHeaderLabels([self.tr(h) for h in ROW_HEADERS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        layout.addWidget(self.table)
        note = QLabel(self.tr("Coarse-scale samples; bold = lowest test RMSE in the partition. "
                              "Skill at 1 km is shown by validating against stations."), self)
        note.setWordWrap(True)
        layout.addWidget(note)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        if model_path:
            self.file_widget.setFilePath(model_path)
            self.load(model_path)

    def load(self, path):
        """Show the model at ``path``; a bad file shows the reason instead of raising."""
        self.table.setRowCount(0)
        if not path:
            self.summary.setText("")
            return False
        try:
            manifest = read_manifest(path)
        except SmdError as err:
            self.summary.setText(self.tr("Cannot read this model file: {}").format(err))
            self.summary.setStyleSheet("color: #b00020;")
            return False
        self.summary.setStyleSheet("")
        self.summary.setText(summary_text(manifest) + "\n" + _signature_line(path))
        rows = list((manifest.get("metrics") or {}).get("rows") or [])
        bold = QFont()
        bold.setBold(True)
        best = best_test_rows(rows)
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, key in enumerate(ROW_FIELDS):
                item = QTableWidgetItem(format_value(row.get(key)))
                if column >= 2:
                    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                if index in best:
                    item.setFont(bold)
                self.table.setItem(index, column, item)
        return True
