"""DORA metrics from the ledger (issue 11): arithmetic in dora.py, bands in bands.py, reading
only the records of a window in reading.py, threshold alerts in alerts.py."""
