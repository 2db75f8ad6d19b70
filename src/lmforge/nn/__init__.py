"""lmforge.nn"""
