"""Files encrypted for their reader: age encryption of closed files (encrypt), keygen and
decryption (decrypt). The Pi holds recipients only; the private key lives elsewhere."""
