using Microsoft.ML;
using Microsoft.ML.Data;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// Row-at-a-time mapping for <see cref="PredictionEngine{TSrc,TDst}"/> and composed transformer chains: the output
/// row passes the input columns through and computes the embedding of the current input row on first request,
/// cached by row position (a chain may read the column more than once per row).
/// </summary>
internal sealed class UllmeEmbeddingRowMapper(UllmeEmbeddingTransformer transformer, DataViewSchema inputSchema, DataViewSchema outputSchema) : IRowToRowMapper
{
    public DataViewSchema InputSchema => inputSchema;
    public DataViewSchema OutputSchema => outputSchema;

    private int OutputIndex => inputSchema.Count;

    /// <summary>The embedding needs the text column; input columns map to themselves.</summary>
    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new SortedDictionary<int, DataViewSchema.Column>();
        foreach (var c in dependingColumns)
        {
            if (c.Index == OutputIndex)
            {
                var text = inputSchema[transformer.InputColumnName];
                result[text.Index] = text;
            }
            else if (c.Index < OutputIndex)
            {
                result[c.Index] = inputSchema[c.Index];
            }
        }
        return result.Values;
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(activeColumns);
        return new Row(transformer, input, outputSchema, activeColumns.Select(c => c.Index).ToHashSet(), OutputIndex);
    }

    private sealed class Row(UllmeEmbeddingTransformer transformer, DataViewRow input, DataViewSchema schema, HashSet<int> active, int outputIndex) : DataViewRow
    {
        private readonly Lock _lock = new();
        private long _cachedPosition = -1;
        private float[]? _cached;

        public override DataViewSchema Schema => schema;
        public override long Position => input.Position;
        public override long Batch => input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            if (column.Index != outputIndex)
                return input.GetGetter<TValue>(input.Schema[column.Index]);
            if (typeof(TValue) != typeof(VBuffer<float>))
                throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}; ask for VBuffer<Single>, not {typeof(TValue).Name}.");

            var textGetter = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[transformer.InputColumnName]);
            ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> dst) =>
            {
                float[] e = Current(textGetter);
                var editor = VBufferEditor.Create(ref dst, e.Length);
                e.AsSpan().CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        private float[] Current(ValueGetter<ReadOnlyMemory<char>> textGetter)
        {
            lock (_lock)
            {
                long pos = input.Position;
                if (_cached is null || pos != _cachedPosition)
                {
                    ReadOnlyMemory<char> text = default;
                    textGetter(ref text);
                    _cached = transformer.EmbedWindow([text.ToString()], channel: null, firstRow: pos)[0];
                    _cachedPosition = pos;
                }
                return _cached;
            }
        }
    }
}
