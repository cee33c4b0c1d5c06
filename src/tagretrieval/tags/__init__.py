"""The tag side of the flow: every tag encoder (a tag vocabulary -> one vector per tag, ``conf/tag_encoder``).

==================  ===========================================================================================
module              what
==================  ===========================================================================================
``encoders``        word2vec files, co-occurrence vectors (gensim), learnt vectors, and the encoder base
``pitch``           pitch codes for note tags (mini-MusicNet)
``sentence``        a sentence encoder (all-MiniLM-L6-v2) for tags and free-text queries
``prepared``        vectors an importer prepared (MSD500's release)
``shared``          vectors computed once and shared by the jobs of a sweep
==================  ===========================================================================================

A new tag encoder goes here, with its config in ``conf/tag_encoder/`` and its class in
:data:`tagretrieval.models.spec.BUILDABLE`. May import :mod:`tagretrieval.runtime` only.
"""
