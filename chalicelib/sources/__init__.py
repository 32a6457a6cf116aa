"""Where parts come from: one module per kind of part, each behind the ``Source`` contract (base.py).

bucket.py reads input-bucket keys; url.py fetches links with yt-dlp (ytdlp.py builds the guarded
YoutubeDL, rules.py and failures.py decide, cache.py keeps what was fetched). Importing this
package loads no yt-dlp: the REST path identifies bucket parts through it.
"""
