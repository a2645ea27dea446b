"""The converter's core: what every runner of a conversion does the same way.

Two runners convert: `pipelines/convert.py` in this process (resumable split by
split) and `pipelines/beam_convert.py` as an Apache Beam pipeline. They differ only
in how they read, spread and write; the rest is here, written once:

- `plan`: the arguments, the split of every input, the reader options, the layout
  the splits share, the refusal of one file in two splits, of a missing or empty
  file, and the fingerprint (options, and every input's path, size and
  modification time) that a finished conversion records;
- `output`: the output folder's lock, the finished conversion it may hold (reused
  when its fingerprint matches), the staging of a replacement, and `finish`, which
  writes `metadata.json` last and publishes;
- `checks`: no empty input file or split, and no needlessly large vocabulary;
- `rows`: the validation split's hash, the label counts and the record encoding.
"""
