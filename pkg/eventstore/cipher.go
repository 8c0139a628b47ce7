package eventstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Cipher encrypts record data with AES-256-GCM. Each record gets a fresh
// random nonce, and the record's stream id, position and topic are bound
// in as additional data, so a ciphertext moved to another row fails to
// decrypt just like a modified one.
type Cipher struct {
	aead cipher.AEAD
}

// KeySize is the length of a cipher key in bytes (AES-256).
const KeySize = 32

// GenerateCipherKey returns a new random key, base64-encoded: the format
// CIPHER_KEY expects. Keep it safe; data written with it cannot be read
// without it.
func GenerateCipherKey() (string, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("eventstore: generate cipher key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// NewCipher builds a cipher from a base64-encoded 32-byte key (standard or
// URL alphabet, padded or not). A malformed or short key is an error
// matching ErrCipher.
func NewCipher(encodedKey string) (*Cipher, error) {
	encodedKey = strings.TrimSpace(encodedKey)
	if encodedKey == "" {
		return nil, fmt.Errorf("%w: empty", ErrCipher)
	}
	var key []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err = enc.DecodeString(encodedKey); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrCipher, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: got %d bytes, need %d (generate one with GenerateCipherKey)", ErrCipher, len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCipher, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCipher, err)
	}
	return &Cipher{aead: aead}, nil
}

// Encrypt returns nonce || ciphertext of plaintext, authenticated with ad.
func (c *Cipher) Encrypt(plaintext, ad []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, ns, ns+len(plaintext)+c.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("eventstore: nonce: %w", err)
	}
	return c.aead.Seal(out, out[:ns], plaintext, ad), nil
}

// Decrypt reverses Encrypt. A wrong key, a modified ciphertext or
// different additional data all fail with an error matching ErrIntegrity
// and ErrCipher.
func (c *Cipher) Decrypt(data, ad []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	if len(data) < ns+c.aead.Overhead() {
		return nil, fmt.Errorf("%w: ciphertext too short: %w", ErrIntegrity, ErrCipher)
	}
	out, err := c.aead.Open(nil, data[:ns], data[ns:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot decrypt (wrong CIPHER_KEY or tampered data): %w", ErrIntegrity, ErrCipher)
	}
	return out, nil
}
