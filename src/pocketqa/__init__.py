"""pocketqa: compact extractive question answering (SQuAD 2.0).

Import what you need from the submodules; the top level only re-exports the inference
API lazily so that ``import pocketqa`` stays cheap (no torch at import time).
"""

__version__ = "0.1.0"
__all__ = ["QuestionAnswerer", "__version__"]


def __getattr__(name):
    if name == "QuestionAnswerer":
        from pocketqa.inference.answerer import QuestionAnswerer

        return QuestionAnswerer
    raise AttributeError(f"module 'pocketqa' has no attribute {name!r}")
