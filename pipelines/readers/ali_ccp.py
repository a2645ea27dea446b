"""Ali-CCP processed formats: torch-rechub CSV, AITM CSV and PaddleRec ESMM text."""
import numpy as np

from pwiser_tf.pipelines.readers.base import Chunk, Layout, Reader, parse_ints
from pwiser_tf.pipelines.readers.processed import FILE_SHIFT, ProcessedCsvReader
from pwiser_tf.pipelines.readers.table import drop_bad_cells
from pwiser_tf.pipelines.readers.tokens import MULTI, SINGLE, FeatureTokens, token_checks

_USER = ("101", "121", "122", "124", "125", "126", "127", "128", "129")
_BEHAVIOUR = ("109_14", "110_14", "127_14", "150_14")
_LABELS = {"click": "click", "conversion": "purchase"}


class RechubCsvReader(ProcessedCsvReader):
    """torch-rechub's 33 columns: `click, purchase`, 23 label-encoded ids (only the
    last id of a multi-valued field) and 8 scaled values `D*`; header first."""

    format = "ali-ccp-csv"
    CATEGORICAL = _USER + ("205", "206", "207", "210", "216", "508", "509", "702", "853",
                           "301") + _BEHAVIOUR
    NUMERICAL = tuple(f"D{name}" for name in _BEHAVIOUR + ("508", "509", "702", "853"))
    HEADER = ("click", "purchase") + CATEGORICAL + NUMERICAL
    LABELS = _LABELS
    DATASET = "ali-ccp"


class AitmCsvReader(ProcessedCsvReader):
    """AITM's 20 columns: `click, purchase` and 18 label-encoded ids, with or
    without a header line."""

    format = "aitm-csv"
    CATEGORICAL = _USER + ("205", "206", "207", "216", "508", "509", "702", "853", "301")
    HEADER = ("click", "purchase") + CATEGORICAL
    LABELS = _LABELS
    DATASET = "ali-ccp"
    HEADER_REQUIRED = False


class EsmmTextReader(Reader):
    """PaddleRec's ESMM text: `line_no,click,conversion,field:id,...` with every id
    of the multi-valued fields (no values). Row id: `line_no`. A single-valued field
    absent from a row gets id 0 (the format's ids start at 1)."""

    format = "esmm-text"

    def _open(self) -> Layout:
        self._tokens = FeatureTokens((b",", b":", None), with_values=False)
        return Layout("ali-ccp", SINGLE, (), tuple((name, False) for name in MULTI))

    def _block(self, block: bytes, first_line: int, path: str, index: int):
        heads, texts, lines = [], [], []
        for offset, line in enumerate(block.split(b"\n")[:-1]):
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            parts = line.split(b",", 3)
            head = parse_ints(parts[:3])
            if head is None or len(parts) < 3:
                self.malformed(path, first_line + offset, "expected line_no,click,conversion,"
                               "field:id,... with line_no, click, conversion in int64")
                continue
            heads.append(head)
            texts.append(parts[3] if len(parts) > 3 else b"")
            lines.append(first_line + offset)
        if not heads:
            return None
        lines = np.asarray(lines, np.int64)
        keep, categorical, numerical, multi = self._tokens.parse(texts, lines, path,
                                                                 self.malformed)
        heads = np.asarray(heads, np.int64)[keep]
        lines = lines[keep]
        chunk = Chunk(categorical, numerical, multi,
                      {"click": heads[:, 1], "conversion": heads[:, 2]},
                      (np.int64(index) << FILE_SHIFT) + heads[:, 0], lines, path)
        keep = drop_bad_cells(token_checks(categorical, numerical, heads[:, 1:], multi),
                              lines, path, self.malformed)
        return chunk if keep.all() else chunk.select(keep)
