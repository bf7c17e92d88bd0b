using System.Globalization;
using System.Security.Cryptography;
using Parquet;
using Parquet.Schema;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>
/// An output shard: a Parquet file (one row group) with a required string column <c>id</c> and a column
/// <c>embedding</c>, a list of floats with exactly D values in every row; the file's key-value metadata holds
/// <c>ullme.dimension</c> = D and whatever the writer adds (model, job, work item). Floats round-trip bit for bit.
/// </summary>
internal static class ShardFile
{
    public const string IdColumn = "id";
    public const string EmbeddingColumn = "embedding";
    public const string DimensionKey = "ullme.dimension";

    private static readonly DataField IdField = new DataField<string>(IdColumn, false);
    private static readonly DataField ElementField = new DataField<float>("element", false);
    private static readonly ParquetSchema Schema = new(IdField, new ListField(EmbeddingColumn, ElementField));

    /// <summary>Writes a shard to <paramref name="path"/> (created or replaced).</summary>
    public static void Write(string path, IReadOnlyList<string> ids, IReadOnlyList<float[]> vectors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 16);
        Write(stream, ids, vectors, metadata);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Writes a shard to <paramref name="output"/> (writable and seekable; left open).</summary>
    public static void Write(Stream output, IReadOnlyList<string> ids, IReadOnlyList<float[]> vectors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(vectors);
        if (ids.Count != vectors.Count)
            throw new ArgumentException($"{ids.Count} ids but {vectors.Count} vectors.", nameof(vectors));
        int rows = ids.Count;
        int dim = rows == 0 ? 0 : (vectors[0] ?? throw new ArgumentException("Vector 0 is null.", nameof(vectors))).Length;
        if (rows > 0 && dim == 0) throw new ArgumentException("The vectors are empty.", nameof(vectors));
        for (int i = 0; i < rows; i++)
        {
            if (ids[i] is null) throw new ArgumentException($"Id {i} is null.", nameof(ids));
            var v = vectors[i] ?? throw new ArgumentException($"Vector {i} is null.", nameof(vectors));
            if (v.Length != dim)
                throw new ArgumentException($"Vector {i} has {v.Length} values; vector 0 has {dim} (every vector of a shard has the same dimension).", nameof(vectors));
        }
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        if (metadata is not null)
            foreach (var (k, v) in metadata) meta[k] = v;
        string dimText = dim.ToString(CultureInfo.InvariantCulture);
        if (meta.TryGetValue(DimensionKey, out string? given) && given != dimText)
            throw new ArgumentException($"Metadata '{DimensionKey}' is {given}, but the vectors have {dim} values.", nameof(metadata));
        meta[DimensionKey] = dimText;

        long count = (long)rows * dim;
        if (count > Array.MaxLength) throw new ArgumentException($"{rows} × {dim} values are too many for one shard.", nameof(vectors));
        var values = new float[count];
        var repetition = new int[count];
        var definition = new int[count];
        for (int i = 0; i < rows; i++)
        {
            vectors[i].CopyTo(values, (long)i * dim);
            repetition.AsSpan(i * dim + 1, dim - 1).Fill(1); // 0 starts a row's list, 1 continues it
        }
        definition.AsSpan().Fill(ElementField.MaxDefinitionLevel); // every element present
        ParquetInput.RunSync(async () =>
        {
            await using (var writer = await ParquetWriter.CreateAsync(Schema, output, null, false).ConfigureAwait(false))
            {
                writer.CustomMetadata = meta;
                using var group = writer.CreateRowGroup();
                await group.WriteAsync(IdField, ids).ConfigureAwait(false);
                await group.WriteAllPartsAsync<float>(ElementField, values, definition, repetition, CancellationToken.None).ConfigureAwait(false);
            }
            return 0;
        });
    }

    /// <summary>Reads a shard back; a file that is not one is a <see cref="UllmeException"/> naming it.</summary>
    public static (string[] Ids, float[][] Vectors, IReadOnlyDictionary<string, string> Metadata) Read(string path) => ParquetInput.RunSync(async () =>
    {
        await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        await using var reader = await ParquetInput.OpenAsync(path, stream, CancellationToken.None).ConfigureAwait(false);
        var meta = new Dictionary<string, string>(reader.CustomMetadata, StringComparer.Ordinal);
        if (!meta.TryGetValue(DimensionKey, out string? dimText)
            || !int.TryParse(dimText, NumberStyles.None, CultureInfo.InvariantCulture, out int dim))
            throw new UllmeException($"{path}: not an embedding shard (no '{DimensionKey}' in its metadata).");
        var fields = reader.Schema.GetDataFields();
        var idField = fields.FirstOrDefault(f => f.Name == IdColumn && f.MaxRepetitionLevel == 0);
        var element = fields.FirstOrDefault(f => f.Path.ToString().StartsWith(EmbeddingColumn, StringComparison.Ordinal) && f.MaxRepetitionLevel == 1);
        if (idField is null || element is null || element.ClrType != typeof(float))
            throw new UllmeException($"{path}: not an embedding shard (it needs a string column '{IdColumn}' and a float list column '{EmbeddingColumn}').");
        var ids = new List<string>();
        var vectors = new List<float[]>();
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            int rows = checked((int)group.RowCount);
            var groupIds = new string?[rows];
            await group.ReadAsync(idField, groupIds.AsMemory(), null).ConfigureAwait(false);
            int levels = checked((int)group.GetMetadata(element)!.MetaData!.NumValues);
            if (levels != (long)rows * dim)
                throw new UllmeException($"{path}: row group {g} has {levels} embedding values for {rows} rows of dimension {dim}.");
            var values = new float[levels];
            var definition = new int[levels];
            var repetition = new int[levels];
            await group.ReadRawAsync<float>(element, values, definition, repetition, CancellationToken.None).ConfigureAwait(false);
            for (int i = 0; i < rows; i++)
            {
                for (int j = 0; j < dim; j++)
                {
                    int k = i * dim + j;
                    if (repetition[k] != (j == 0 ? 0 : 1) || definition[k] != element.MaxDefinitionLevel)
                        throw new UllmeException($"{path}: row {ids.Count + 1} does not hold exactly {dim} embedding values.");
                }
                ids.Add(groupIds[i] ?? throw new UllmeException($"{path}: row {ids.Count + 1} has no id."));
                vectors.Add(values.AsSpan(i * dim, dim).ToArray());
            }
        }
        return (ids.ToArray(), vectors.ToArray(), (IReadOnlyDictionary<string, string>)meta);
    });

    /// <summary>The SHA-256 of a file, lowercase hex.</summary>
    public static string Sha256(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
