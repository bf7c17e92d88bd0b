using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Ullme.MLNet;

namespace Ullme.Cli.Io;

/// <summary>Writes embeddings as they are produced, to <c>.npy</c> (float32 [N, D], C order) or <c>.jsonl</c>
/// (<c>{"embedding": [...]}</c> a line). Row order = input order.</summary>
internal sealed class EmbeddingWriter
{
    private readonly Stream _stream;
    private readonly bool _npy;
    private readonly byte[] _buffer = new byte[4];

    private EmbeddingWriter(Stream stream, bool npy)
    {
        _stream = stream;
        _npy = npy;
    }

    public static void CheckExtension(string path)
    {
        string ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext is not (".npy" or ".jsonl"))
            throw new UllmeException($"Output '{path}': unknown extension '{ext}'. Use .npy or .jsonl.");
    }

    public static EmbeddingWriter Open(Stream stream, string path, long rows, int dim)
    {
        bool npy = Path.GetExtension(path).Equals(".npy", StringComparison.OrdinalIgnoreCase);
        var w = new EmbeddingWriter(stream, npy);
        if (npy) w.WriteNpyHeader(rows, dim);
        return w;
    }

    private void WriteNpyHeader(long rows, int dim)
    {
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}";
        int unpadded = 10 + dict.Length + 1;                 // magic(6) + version(2) + len(2) + dict + '\n'
        int total = (unpadded + 63) / 64 * 64;
        string header = dict + new string(' ', total - unpadded) + "\n";
        _stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        Span<byte> len = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length);
        _stream.Write(len);
        _stream.Write(Encoding.ASCII.GetBytes(header));
    }

    private long _row;

    /// <summary>Appends one row. A <c>.jsonl</c> row with a NaN or infinite value is refused (JSON has no such
    /// numbers): the command fails and, as outputs are written atomically, leaves no file.</summary>
    /// <exception cref="UllmeException">A value of the row is not finite (.jsonl only).</exception>
    public void Write(float[] embedding)
    {
        long row = _row++;
        if (!_npy)
        {
            int bad = Array.FindIndex(embedding, v => !float.IsFinite(v));
            if (bad >= 0)
                throw new UllmeException($"Embedding of input row {row + 1} has the non-finite value {embedding[bad].ToString(CultureInfo.InvariantCulture)} at dimension {bad}, " +
                    "which JSON cannot hold; nothing was written. The model or its dtype overflows on this input (try --dtype float32).");
        }
        if (_npy)
        {
            foreach (float v in embedding)
            {
                BinaryPrimitives.WriteSingleLittleEndian(_buffer, v);
                _stream.Write(_buffer);
            }
            return;
        }
        var sb = new StringBuilder("{\"embedding\":[");
        for (int i = 0; i < embedding.Length; i++)
        {
            if (i > 0) sb.Append(',');
            sb.Append(embedding[i].ToString("R", CultureInfo.InvariantCulture));
        }
        sb.Append("]}\n");
        _stream.Write(Encoding.UTF8.GetBytes(sb.ToString()));
    }
}
