"""lmforge.distributed"""
