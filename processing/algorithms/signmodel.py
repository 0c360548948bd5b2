"""smdownscale:signmodel - a signed copy of a model file."""
from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterString,
)

from .base import SmdAlgorithm, core_errors, model_file_error, tr


class SignModelAlgorithm(SmdAlgorithm):
    MODEL = "MODEL"
    PRIVATE_KEY = "PRIVATE_KEY"
    SIGNER = "SIGNER"
    OUTPUT = "OUTPUT"
    KEY_ID = "KEY_ID"

    ALG_ID = "signmodel"
    DISPLAY_NAME = "Sign model file"
    GROUP_ID = "downscaling"
    HELP = (
        "Writes a copy of a model file signed with your private key (from <i>Generate model "
        "signing keys</i>). The model is fully checked first; the copy holds the same members plus "
        "signature.json, an Ed25519 signature over the manifest digest, which covers every learner "
        "and every number the model reports."
        "<h3>Inputs</h3>"
        "<b>Model</b>: a .smdmodel.zip.<br><b>Private key</b>: your PEM private key.<br>"
        "<b>Signer</b>: optional name shown to whoever checks the signature."
        "<p>Users refuse unsigned or untrusted models with the REQUIRE_SIGNED option of "
        "<i>Predict fine soil moisture</i>. Needs the Python package cryptography.</p>")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterFile(self.MODEL, tr("Model file"), extension="zip")
        self.add_parameter(param, tr("The .smdmodel.zip to sign."))
        param = QgsProcessingParameterFile(self.PRIVATE_KEY, tr("Private key"))
        self.add_parameter(param, tr("PEM private key written by Generate model signing keys."))
        param = QgsProcessingParameterString(self.SIGNER, tr("Signer name"), optional=True)
        self.add_parameter(param, tr("Shown in signature checks, e.g. your name or team."))
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT, tr("Signed model file"), tr("smdownscale model (*.smdmodel.zip *.zip)"))
        self.add_parameter(param, tr("The signed copy (a new file: the input model is never overwritten)."))
        self.addOutput(QgsProcessingOutputString(self.KEY_ID, tr("Key id")))

    def parameter_error(self, parameters, context):
        return model_file_error(self.parameterAsFile(parameters, self.MODEL, context))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.signing import sign_model

        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        with core_errors():
            info = sign_model(
                self.parameterAsFile(parameters, self.MODEL, context),
                self.parameterAsFile(parameters, self.PRIVATE_KEY, context), output,
                signer=self.parameterAsString(parameters, self.SIGNER, context) or "")
        feedback.pushInfo(tr("Signed with key {} into {}.").format(info["key_id"], output))
        return {self.OUTPUT: output, self.KEY_ID: info["key_id"]}
