"""dpsynth: a benchmark harness for differentially private data synthesis.

PEARL (Liew, Takahashi, Ueno, ICLR 2022) beside DP-MERF (Harder et al., AISTATS 2021) and
DP-SGD-trained GANs, with exact privacy accounting and published evaluation protocols.
"""

__version__ = "0.1.0"
