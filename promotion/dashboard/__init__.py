"""``promote report``: the delivery dashboard, one self-contained HTML file (issue 11 item 2).

``model.py`` gathers what the page shows from the ledger alone, ``svg.py`` draws the charts,
``html.py`` writes the page. Named ``dashboard`` because ``promotion/report.py`` already holds the
Markdown stage reports. Pure core: S3 only, no Prefect.
"""
