"""Data and the embedded model: the crater renderer and real Mars crops (:mod:`.craters`), the reference value decoded
once from ``--reference`` (:mod:`.references`) and the job's prompts (:mod:`.prompts`)."""
