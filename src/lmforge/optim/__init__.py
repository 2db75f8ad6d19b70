"""lmforge.optim"""
