"""Helpers that several studies under results/ share."""
