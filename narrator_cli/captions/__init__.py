"""Word timings and captions.

``words``: a line's words (the text is the authority on what a word is) and when each is spoken, from what
a provider reports or estimated by character count; how they are kept in an entry's metadata.
``cues``: words grouped into caption cues by the reading rules. ``formats``: SRT, WebVTT and word JSON.
"""
