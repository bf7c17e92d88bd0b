using System.Buffers;
using System.Text;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>A forward reader over a file's bytes with its own large buffer: the scanners look at
/// <see cref="Available"/> (vectorized searches), then <see cref="Advance"/>; <see cref="Position"/> is the offset
/// of the next byte in the file. Cancellation is checked at every buffer refill.</summary>
internal sealed class ByteCursor : IDisposable
{
    private readonly FileStream _stream;
    private readonly byte[] _buffer;
    private readonly CancellationToken _ct;
    private long _bufferStart;
    private int _pos, _len;

    public ByteCursor(string path, CancellationToken ct, int bufferSize = 1 << 20)
    {
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        _buffer = ArrayPool<byte>.Shared.Rent(bufferSize);
        _ct = ct;
    }

    public string Path => _stream.Name;

    /// <summary>The file offset of the next byte.</summary>
    public long Position => _bufferStart + _pos;

    /// <summary>The buffered bytes from <see cref="Position"/> on (empty until <see cref="Fill"/>).</summary>
    public ReadOnlySpan<byte> Available => _buffer.AsSpan(_pos, _len - _pos);

    /// <summary>Makes <see cref="Available"/> non-empty; false at the end of the file.</summary>
    public bool Fill()
    {
        if (_pos < _len) return true;
        _ct.ThrowIfCancellationRequested();
        _bufferStart += _len;
        _pos = 0;
        _len = _stream.Read(_buffer, 0, _buffer.Length);
        return _len > 0;
    }

    public void Advance(int count) => _pos += count;

    /// <summary>The next byte without consuming it, or -1 at the end.</summary>
    public int Peek() => Fill() ? _buffer[_pos] : -1;

    public void Seek(long offset)
    {
        _stream.Position = offset;
        _bufferStart = offset;
        _pos = _len = 0;
    }

    /// <summary>Skips a UTF-8 byte-order mark at the start of the file (UTF-16/32 ones are an error: the readers
    /// of <c>ullme embed</c> would decode them, the cluster does not).</summary>
    public void SkipBom()
    {
        Span<byte> head = stackalloc byte[4];
        _stream.Position = 0;
        head = head[.._stream.ReadAtLeast(head, 4, throwOnEndOfStream: false)];
        if (head.StartsWith((ReadOnlySpan<byte>)[0xFF, 0xFE]) || head.StartsWith((ReadOnlySpan<byte>)[0xFE, 0xFF])
            || head.StartsWith((ReadOnlySpan<byte>)[0, 0, 0xFE, 0xFF]))
            throw new UllmeException($"{Path}: the file is UTF-16 or UTF-32 (a byte-order mark says so); convert it to UTF-8.");
        Seek(head.StartsWith("\uFEFF"u8) ? 3 : 0);
    }

    public void Dispose()
    {
        _stream.Dispose();
        ArrayPool<byte>.Shared.Return(_buffer);
    }
}

/// <summary>Bytes collected for one line or field, decoded as UTF-8 with each invalid sequence replaced by U+FFFD
/// (the decoders of <c>ullme embed</c> do the same over the whole stream; the separators are ASCII, which ends any
/// sequence, so decoding piece by piece gives the same text).</summary>
internal sealed class Utf8Collector
{
    private static readonly Encoding Utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);
    private readonly ArrayBufferWriter<byte> _bytes = new(256);
    private readonly StringBuilder _text = new();

    public int ByteCount => _bytes.WrittenCount;

    public void Append(ReadOnlySpan<byte> bytes) => _bytes.Write(bytes);

    public void Append(byte b) => _bytes.Write([b]);

    /// <summary>Decodes what is pending: the next bytes do not continue a sequence of the earlier ones (used where
    /// the original reader drops a character between them).</summary>
    public void Break()
    {
        if (_bytes.WrittenCount == 0) return;
        _text.Append(Utf8.GetString(_bytes.WrittenSpan));
        _bytes.ResetWrittenCount();
    }

    public string TakeString()
    {
        string s;
        if (_text.Length == 0) s = Utf8.GetString(_bytes.WrittenSpan);
        else
        {
            Break();
            s = _text.ToString();
        }
        _bytes.ResetWrittenCount();
        _text.Clear();
        return s;
    }

    public void Clear()
    {
        _bytes.ResetWrittenCount();
        _text.Clear();
    }
}

/// <summary>Tells whether a line is blank as <see cref="string.IsNullOrWhiteSpace"/> says of its decoded text,
/// fed the line's bytes piece by piece: ASCII is judged byte by byte, anything else through a decoder.</summary>
internal sealed class BlankLineCheck
{
    private readonly Decoder _decoder = new UTF8Encoding(false, false).GetDecoder();
    private readonly char[] _chars = new char[4096];
    private bool _decoding;

    public void Reset()
    {
        _decoding = false;
        _decoder.Reset();
    }

    /// <summary>Feeds bytes of the line; true once a non-white-space character is seen.</summary>
    public bool Feed(ReadOnlySpan<byte> bytes)
    {
        if (!_decoding)
        {
            int i = 0;
            for (; i < bytes.Length; i++)
            {
                byte b = bytes[i];
                if (b == ' ' || (b >= 0x09 && b <= 0x0D)) continue;
                if (b < 0x80) return true;
                break;
            }
            if (i == bytes.Length) return false;
            _decoding = true;
            bytes = bytes[i..];
        }
        return Decode(bytes, flush: false);
    }

    /// <summary>At the end of the line: true when the last, incomplete bytes make a non-white-space character.</summary>
    public bool Finish() => _decoding && Decode([], flush: true);

    private bool Decode(ReadOnlySpan<byte> bytes, bool flush)
    {
        do
        {
            _decoder.Convert(bytes, _chars, flush, out int used, out int produced, out _);
            for (int k = 0; k < produced; k++)
                if (!char.IsWhiteSpace(_chars[k])) return true;
            bytes = bytes[used..];
        } while (bytes.Length > 0);
        return false;
    }
}
