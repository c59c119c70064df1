"""rfspeech: receptive-field analysis and RF-Next dilation search for speech-synthesis models."""

from rfspeech.errors import RFSpeechError

__version__ = "0.1.0"
__all__ = ["RFSpeechError", "__version__"]
