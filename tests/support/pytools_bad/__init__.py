"""Broken Python tool modules for the loader's refusal tests."""
