"""smdownscale:generatekeys - a new Ed25519 key pair for signing model files."""
from qgis.core import QgsProcessingOutputString, QgsProcessingParameterFileDestination

from .base import SmdAlgorithm, core_errors, tr


class GenerateKeysAlgorithm(SmdAlgorithm):
    OUTPUT_PRIVATE = "OUTPUT_PRIVATE"
    OUTPUT_PUBLIC = "OUTPUT_PUBLIC"
    KEY_ID = "KEY_ID"

    ALG_ID = "generatekeys"
    DISPLAY_NAME = "Generate model signing keys"
    GROUP_ID = "downscaling"
    HELP = (
        "Writes a new Ed25519 key pair for signing model files that a team shares."
        "<h3>Outputs</h3>"
        "<b>Private key</b>: PEM file that signs models (<i>Sign model file</i>). Keep it secret "
        "(it is written readable by you only); an existing file is never overwritten.<br>"
        "<b>Public key</b>: PEM file to give to the people who use your models: they add it to "
        "their trusted keys (the TRUSTED_KEYS option of <i>Predict fine soil moisture</i>, or the "
        "setting smdownscale/trusted_keys).<br>"
        "<b>Key id</b>: 16 hex digits naming the key in signatures and messages."
        "<p>Needs the Python package cryptography (Debian: python3-cryptography).</p>")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_PRIVATE, tr("Private key (keep secret)"), tr("PEM private key (*.pem)"))
        self.add_parameter(param, tr("Signs model files; never share it."))
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_PUBLIC, tr("Public key (to share)"), tr("PEM public key (*.pub *.pem)"))
        self.add_parameter(param, tr("Others add it to their trusted keys."))
        self.addOutput(QgsProcessingOutputString(self.KEY_ID, tr("Key id")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.signing import generate_key_pair

        private_path = self.parameterAsFileOutput(parameters, self.OUTPUT_PRIVATE, context)
        public_path = self.parameterAsFileOutput(parameters, self.OUTPUT_PUBLIC, context)
        with core_errors():
            key = generate_key_pair(private_path, public_path)
        feedback.pushInfo(tr("Key id {}: share {} and keep {} secret.").format(key, public_path, private_path))
        return {self.OUTPUT_PRIVATE: private_path, self.OUTPUT_PUBLIC: public_path, self.KEY_ID: key}
