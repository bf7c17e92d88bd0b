using Microsoft.ML;
using Microsoft.ML.Data;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// Row-at-a-time mapping for <see cref="PredictionEngine{TSrc,TDst}"/> and composed transformer chains: the output
/// row passes the input columns through and computes the outputs of the current input row on first request (all the
/// active outputs at once), cached by row position (a chain may read a column more than once per row).
/// </summary>
internal sealed class TextWindowRowMapper(ITextWindowMapper mapper, DataViewSchema inputSchema, DataViewSchema outputSchema) : IRowToRowMapper
{
    public DataViewSchema InputSchema => inputSchema;
    public DataViewSchema OutputSchema => outputSchema;

    private int OutputIndex => inputSchema.Count;

    /// <summary>The outputs need the text columns; input columns map to themselves.</summary>
    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new SortedDictionary<int, DataViewSchema.Column>();
        foreach (var c in dependingColumns)
        {
            if (c.Index >= OutputIndex)
            {
                foreach (string name in mapper.InputColumnNames)
                {
                    var text = inputSchema[name];
                    result[text.Index] = text;
                }
            }
            else
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
        return new Row(mapper, input, outputSchema, activeColumns.Select(c => c.Index).ToHashSet(), OutputIndex);
    }

    private sealed class Row(ITextWindowMapper mapper, DataViewRow input, DataViewSchema schema, HashSet<int> active, int outputIndex) : DataViewRow
    {
        private readonly Lock _lock = new();
        private readonly bool[] _needed = Enumerable.Range(0, mapper.OutputColumns.Count).Select(k => active.Contains(outputIndex + k)).ToArray();
        private ValueGetter<ReadOnlyMemory<char>>[]? _textGetters;
        private long _cachedPosition = -1;
        private float[][]?[]? _cached;

        public override DataViewSchema Schema => schema;
        public override long Position => input.Position;
        public override long Batch => input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            if (column.Index < outputIndex)
                return input.GetGetter<TValue>(input.Schema[column.Index]);
            int k = column.Index - outputIndex;
            lock (_lock)
                _textGetters ??= mapper.InputColumnNames.Select(n => input.GetGetter<ReadOnlyMemory<char>>(input.Schema[n])).ToArray();
            return OutputGetters.Create<TValue>(column, () => Current()[k]![0]);
        }

        private float[][]?[] Current()
        {
            lock (_lock)
            {
                long pos = input.Position;
                if (_cached is null || pos != _cachedPosition)
                {
                    var texts = new IReadOnlyList<string>[_textGetters!.Length];
                    ReadOnlyMemory<char> text = default;
                    for (int c = 0; c < texts.Length; c++)
                    {
                        _textGetters[c](ref text);
                        texts[c] = [text.ToString()];
                    }
                    _cached = mapper.ComputeWindow(texts, _needed, channel: null, firstRow: pos);
                    _cachedPosition = pos;
                }
                return _cached;
            }
        }
    }
}
