using System.Globalization;
using Parquet;
using Parquet.Schema;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>Parquet inputs: a top-level string column of texts (and optionally an id column, string or integer),
/// read by row group (Parquet.Net 6.1).</summary>
internal static class ParquetInput
{
    /// <summary>Runs Parquet.Net's asynchronous API from synchronous code off any caller's scheduler (an Orleans
    /// grain's included), so the continuations never wait for the blocked thread.</summary>
    public static T RunSync<T>(Func<Task<T>> work) => Task.Run(work).GetAwaiter().GetResult();

    public static async Task<ParquetReader> OpenAsync(string path, Stream stream, CancellationToken ct)
    {
        try
        {
            return await ParquetReader.CreateAsync(stream, parquetOptions: null, leaveStreamOpen: true, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException and not UllmeException)
        {
            throw new UllmeException($"{path}: not a readable Parquet file ({e.Message})", e);
        }
    }

    private static FileStream OpenFile(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16, FileOptions.RandomAccess);

    /// <summary>The rows of <paramref name="path"/>, after checking that its columns are there.</summary>
    public static long CountRows(string path, string textColumn, string? idColumn, CancellationToken ct) => RunSync(async () =>
    {
        await using var stream = OpenFile(path);
        await using var reader = await OpenAsync(path, stream, ct).ConfigureAwait(false);
        Columns(path, reader.Schema, textColumn, idColumn);
        long rows = 0;
        for (int g = 0; g < reader.RowGroupCount; g++) rows += reader.Metadata!.RowGroups[g].NumRows;
        return rows;
    });

    /// <summary>Rows [<paramref name="startRow"/>, +<paramref name="rows"/>) of <paramref name="path"/> (fewer
    /// when the file ends first): only the overlapping row groups are read, only the needed columns.</summary>
    public static List<CorpusRow> Read(string path, long startRow, long rows, string textColumn, string? idColumn,
        string idPrefix, CancellationToken ct) => RunSync(async () =>
    {
        var result = new List<CorpusRow>((int)Math.Min(rows, 1 << 16));
        await using var stream = OpenFile(path);
        await using var reader = await OpenAsync(path, stream, ct).ConfigureAwait(false);
        var (text, id) = Columns(path, reader.Schema, textColumn, idColumn);
        long end = startRow + rows, groupStart = 0;
        for (int g = 0; g < reader.RowGroupCount && groupStart < end; g++)
        {
            long groupRows = reader.Metadata!.RowGroups[g].NumRows;
            long from = Math.Max(startRow, groupStart), to = Math.Min(end, groupStart + groupRows);
            if (from < to)
            {
                ct.ThrowIfCancellationRequested();
                using var group = reader.OpenRowGroupReader(g);
                int n = checked((int)groupRows);
                var texts = new string?[n];
                await group.ReadAsync(text, texts.AsMemory(), null, ct).ConfigureAwait(false);
                string?[]? ids = id is null ? null : await ReadIdsAsync(group, id, n, ct).ConfigureAwait(false);
                for (long r = from; r < to; r++)
                {
                    int k = (int)(r - groupStart);
                    string t = texts[k] ?? throw new UllmeException($"{path}: row {r + 1}: the text column '{text.Name}' is null.");
                    string rowId = ids is null ? $"{idPrefix}:{r + 1}"
                        : ids[k] ?? throw new UllmeException($"{path}: row {r + 1}: the id column '{id!.Name}' is null.");
                    result.Add(new CorpusRow(rowId, t));
                }
            }
            groupStart += groupRows;
        }
        return result;
    });

    private static (DataField Text, DataField? Id) Columns(string path, ParquetSchema schema, string textColumn, string? idColumn)
    {
        var flat = schema.Fields.OfType<DataField>().Where(f => f.MaxRepetitionLevel == 0).ToList();
        var text = Find(path, schema, flat, textColumn, "text");
        if (!IsString(text))
            throw new UllmeException($"{path}: the text column '{text.Name}' holds {text.ClrType.Name} values, not strings.");
        DataField? id = null;
        if (idColumn is not null)
        {
            id = Find(path, schema, flat, idColumn, "id");
            if (!IsString(id) && !IntegerTypes.Contains(id.ClrType))
                throw new UllmeException($"{path}: the id column '{id.Name}' holds {id.ClrType.Name} values; use a string or integer column.");
        }
        return (text, id);
    }

    private static DataField Find(string path, ParquetSchema schema, List<DataField> flat, string name, string role) =>
        flat.FirstOrDefault(f => f.Name == name)
        ?? flat.FirstOrDefault(f => string.Equals(f.Name.Trim(), name.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new UllmeException($"{path}: no {role} column '{name}' (columns: {string.Join(", ", schema.Fields.Select(f => f.Name))}).");

    private static bool IsString(DataField f) => f.ClrType == typeof(string) || f.ClrType == typeof(ReadOnlyMemory<char>);

    private static readonly HashSet<Type> IntegerTypes =
        [typeof(sbyte), typeof(byte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long), typeof(ulong)];

    private static async Task<string?[]> ReadIdsAsync(ParquetRowGroupReader group, DataField field, int n, CancellationToken ct)
    {
        if (IsString(field))
        {
            var s = new string?[n];
            await group.ReadAsync(field, s.AsMemory(), null, ct).ConfigureAwait(false);
            return s;
        }
        Type t = field.ClrType;
        if (t == typeof(sbyte)) return await IntegersAsync<sbyte>(group, field, n, ct).ConfigureAwait(false);
        if (t == typeof(byte)) return await IntegersAsync<byte>(group, field, n, ct).ConfigureAwait(false);
        if (t == typeof(short)) return await IntegersAsync<short>(group, field, n, ct).ConfigureAwait(false);
        if (t == typeof(ushort)) return await IntegersAsync<ushort>(group, field, n, ct).ConfigureAwait(false);
        if (t == typeof(int)) return await IntegersAsync<int>(group, field, n, ct).ConfigureAwait(false);
        if (t == typeof(uint)) return await IntegersAsync<uint>(group, field, n, ct).ConfigureAwait(false);
        if (t == typeof(long)) return await IntegersAsync<long>(group, field, n, ct).ConfigureAwait(false);
        return await IntegersAsync<ulong>(group, field, n, ct).ConfigureAwait(false);
    }

    private static async Task<string?[]> IntegersAsync<T>(ParquetRowGroupReader group, DataField field, int n, CancellationToken ct)
        where T : struct, IFormattable
    {
        var ids = new string?[n];
        if (field.IsNullable)
        {
            var v = new T?[n];
            await group.ReadAsync<T>(field, v.AsMemory(), null, ct).ConfigureAwait(false);
            for (int i = 0; i < n; i++) ids[i] = v[i]?.ToString(null, CultureInfo.InvariantCulture);
        }
        else
        {
            var v = new T[n];
            await group.ReadAsync<T>(field, v.AsMemory(), null, ct).ConfigureAwait(false);
            for (int i = 0; i < n; i++) ids[i] = v[i].ToString(null, CultureInfo.InvariantCulture);
        }
        return ids;
    }
}
