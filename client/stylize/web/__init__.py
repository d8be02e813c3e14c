"""`stylize web`: a page for people, served beside Triton. A client of Triton like the CLI: no network runs here.

settings   WebSettings: flags and STYLIZE_WEB_* variables (STYLIZE_URL for Triton)
sniff      what an upload is, from its first bytes (never from its name)
catalog    the server's models, their options and their image step's settings, read from Triton
images     one photo through an image ensemble: one request, or tile by tile with real progress
videos     one clip through the raw-frame path (stylize.sdk.video), frames done of total
jobs       jobs with ids, states, progress, bounded results, private temporary files
app        the Starlette app: the page, the HTTP API (docs/web.md), Server-Sent Events
"""
