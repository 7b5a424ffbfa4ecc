"""DFT verification of top-ranked candidates through atomate2 makers run by jobflow.

``selection`` picks the candidates, ``cp2k`` / ``vasp`` build the code-specific flows,
``store`` opens the jobflow JobStore, ``runner`` runs one candidate with retries, and
``results`` turns stored task documents into rows of ``dft.parquet``.
"""
