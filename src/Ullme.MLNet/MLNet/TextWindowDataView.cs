using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// What the Ullme transforms (<see cref="UllmeEmbeddingTransformer"/>, <see cref="UllmeScoreTransformer"/>) have in
/// common: text columns in, Single (scalar or known-size vector) columns out, computed for a window of rows at once by
/// the shared engine. <see cref="TextWindowDataView"/> and <see cref="TextWindowRowMapper"/> do the ML.NET plumbing
/// (lazy cursors, read-ahead, column pass-through, row-at-a-time prediction) for both.
/// </summary>
internal interface ITextWindowMapper
{
    /// <summary>ML.NET host for channels and progress.</summary>
    IHost Host { get; }

    /// <summary>Channel and progress name (the catalog method's name, e.g. "UllmeEmbed").</summary>
    string ChannelName { get; }

    /// <summary>The text columns read, in the order <see cref="ComputeWindow"/> receives them.</summary>
    IReadOnlyList<string> InputColumnNames { get; }

    /// <summary>Output column types (Single or Vector&lt;Single, D&gt;), appended after the input columns in this order.</summary>
    IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <summary>Rows per <see cref="ComputeWindow"/> call in a cursor.</summary>
    int ReadAheadRows { get; }

    /// <summary>
    /// Values of the outputs marked in <paramref name="needed"/> for a window: <c>texts[c][r]</c> is input column c of
    /// row r; result <c>[k][r]</c> is output k of row r (length 1 for scalar outputs; null for outputs not needed).
    /// </summary>
    float[][]?[] ComputeWindow(IReadOnlyList<string>[] texts, bool[] needed, IChannel? channel, long firstRow);
}

/// <summary>Getters for output values (scalar Single or VBuffer&lt;Single&gt;), shared by cursors and row mappers.</summary>
internal static class OutputGetters
{
    public static ValueGetter<TValue> Create<TValue>(DataViewSchema.Column column, Func<float[]> current)
    {
        if (column.Type is VectorDataViewType)
        {
            if (typeof(TValue) != typeof(VBuffer<float>))
                throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}; ask for VBuffer<Single>, not {typeof(TValue).Name}.");
            ValueGetter<VBuffer<float>> vector = (ref VBuffer<float> dst) =>
            {
                float[] e = current();
                var editor = VBufferEditor.Create(ref dst, e.Length);
                e.AsSpan().CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)vector;
        }
        if (typeof(TValue) != typeof(float))
            throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}; ask for Single, not {typeof(TValue).Name}.");
        ValueGetter<float> scalar = (ref float dst) => dst = current()[0];
        return (ValueGetter<TValue>)(Delegate)scalar;
    }
}

/// <summary>
/// The lazy view an Ullme transformer's <c>Transform</c> returns: the input's columns plus the outputs at index
/// <c>input.Schema.Count + k</c>. Nothing is stored; every cursor streams from an input cursor, and only the outputs
/// a cursor asks for are computed.
/// </summary>
internal sealed class TextWindowDataView : IDataView
{
    private readonly ITextWindowMapper _mapper;
    private readonly IDataView _input;

    public TextWindowDataView(ITextWindowMapper mapper, IDataView input, DataViewSchema schema)
    {
        _mapper = mapper;
        _input = input;
        Schema = schema;
    }

    public DataViewSchema Schema { get; }

    public bool CanShuffle => _input.CanShuffle;

    public long? GetRowCount() => _input.GetRowCount();

    private int OutputIndex => _input.Schema.Count;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        var outputsNeeded = Enumerable.Range(0, _mapper.OutputColumns.Count).Select(k => needed.Contains(OutputIndex + k)).ToArray();
        var inputNeeded = needed.Where(i => i < OutputIndex).Select(i => _input.Schema[i]).ToList();
        var textColumns = _mapper.InputColumnNames.Select(n => _input.Schema[n]).ToArray();
        bool compute = outputsNeeded.Any(x => x);
        if (compute)
            foreach (var t in textColumns)
                if (!inputNeeded.Any(c => c.Index == t.Index)) inputNeeded.Add(t);

        var inputCursor = _input.GetRowCursor(inputNeeded, rand);
        return compute
            ? new BatchingCursor(_mapper, inputCursor, Schema, needed, textColumns, outputsNeeded)
            : new PassThroughCursor(inputCursor, Schema, needed, OutputIndex);
    }

    /// <summary>One cursor: the engine serialises the forward pass anyway, so splitting the rows would only
    /// multiply read-ahead windows, not speed.</summary>
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    /// <summary>Used when no output column is needed: input rows flow through untouched, nothing is computed.</summary>
    private sealed class PassThroughCursor(DataViewRowCursor input, DataViewSchema schema, HashSet<int> active, int outputIndex) : DataViewRowCursor
    {
        public override DataViewSchema Schema => schema;
        public override long Position => input.Position;
        public override long Batch => input.Batch;
        public override bool MoveNext() => input.MoveNext();
        public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index >= outputIndex || !active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            return input.GetGetter<TValue>(input.Schema[column.Index]);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) input.Dispose();
            base.Dispose(disposing);
        }
    }

    /// <summary>
    /// Reads up to <see cref="ITextWindowMapper.ReadAheadRows"/> rows ahead from the input cursor, copying the values
    /// of every active input column (the input cursor has moved on by the time they are served), computes the window's
    /// outputs in one mapper call, then serves the rows in their original order.
    /// </summary>
    private sealed class BatchingCursor : DataViewRowCursor
    {
        private readonly ITextWindowMapper _mapper;
        private readonly DataViewRowCursor _input;
        private readonly DataViewSchema _schema;
        private readonly HashSet<int> _active;
        private readonly int _outputIndex;
        private readonly int _window;
        private readonly bool[] _outputsNeeded;
        private readonly ValueGetter<ReadOnlyMemory<char>>[] _textGetters;
        private readonly ValueGetter<DataViewRowId> _inputIdGetter;
        private readonly Dictionary<int, ColumnBuffer> _buffers = [];
        private readonly IChannel _channel;
        private readonly IProgressChannel _progress;
        private string[][] _texts;
        private DataViewRowId[] _ids;
        private float[][]?[] _outputs;
        private int _count;      // rows in the current window
        private int _slot = -1;  // current row within the window
        private long _position = -1;
        private long _rowsDone;
        private bool _inputDone;

        public BatchingCursor(ITextWindowMapper mapper, DataViewRowCursor input, DataViewSchema schema,
            HashSet<int> active, DataViewSchema.Column[] textColumns, bool[] outputsNeeded)
        {
            _mapper = mapper;
            _input = input;
            _schema = schema;
            _active = active;
            _outputIndex = input.Schema.Count;
            _window = mapper.ReadAheadRows;
            _outputsNeeded = outputsNeeded;
            _texts = textColumns.Select(_ => new string[_window]).ToArray();
            _ids = new DataViewRowId[_window];
            _outputs = new float[][]?[outputsNeeded.Length];
            _textGetters = textColumns.Select(c => input.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
            _inputIdGetter = input.GetIdGetter();
            foreach (int i in active)
                if (i < _outputIndex) _buffers[i] = ColumnBuffer.Create(input, input.Schema[i], _window);
            _channel = mapper.Host.Start(mapper.ChannelName);
            _progress = mapper.Host.StartProgressChannel(mapper.ChannelName);
            _progress.SetHeader(new ProgressHeader("rows"), e => e.SetProgress(0, Interlocked.Read(ref _rowsDone)));
        }

        public override DataViewSchema Schema => _schema;
        public override long Position => _position;
        public override long Batch => _input.Batch;
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (_slot + 1 < _count)
            {
                _slot++;
                _position++;
                return true;
            }
            if (_inputDone || !FillWindow()) return false;
            _slot = 0;
            _position++;
            return true;
        }

        private bool FillWindow()
        {
            _count = 0;
            ReadOnlyMemory<char> text = default;
            while (_count < _window && _input.MoveNext())
            {
                for (int c = 0; c < _textGetters.Length; c++)
                {
                    _textGetters[c](ref text);
                    _texts[c][_count] = text.ToString();
                }
                _inputIdGetter(ref _ids[_count]);
                foreach (var b in _buffers.Values) b.Capture(_count);
                _count++;
            }
            if (_count < _window) _inputDone = true;
            if (_count == 0) return false;
            var window = _texts.Select(t => (IReadOnlyList<string>)new ArraySegment<string>(t, 0, _count)).ToArray();
            _outputs = _mapper.ComputeWindow(window, _outputsNeeded, _channel, _position + 1);
            Interlocked.Add(ref _rowsDone, _count);
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) =>
        {
            CheckRow();
            value = _ids[_slot];
        };

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index >= _outputIndex)
            {
                int k = column.Index - _outputIndex;
                return OutputGetters.Create<TValue>(column, () =>
                {
                    CheckRow();
                    return _outputs[k]![_slot];
                });
            }
            return _buffers[column.Index].GetGetter<TValue>(() => { CheckRow(); return _slot; });
        }

        private void CheckRow()
        {
            if (_slot < 0 || _slot >= _count)
                throw new InvalidOperationException("The cursor is not on a row: call MoveNext() first.");
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _input.Dispose();
                _progress.Dispose();
                _channel.Dispose();
                // Drop the window (texts, copied input values, outputs) so a disposed cursor holds nothing.
                _texts = [];
                _ids = [];
                _outputs = [];
                _buffers.Clear();
                _count = 0;
                _slot = -1;
            }
            base.Dispose(disposing);
        }
    }
}

/// <summary>
/// Holds one input column's values for the rows of a read-ahead window. Vectors are deep-copied (their buffers are
/// reused by the input cursor); other values (numbers, text memory, keys, dates, ids) are copied as they are.
/// </summary>
internal abstract class ColumnBuffer
{
    public abstract void Capture(int slot);
    public abstract ValueGetter<TValue> GetGetter<TValue>(Func<int> slot);

    public static ColumnBuffer Create(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity)
    {
        Type raw = column.Type.RawType;
        Type bufferType = raw.IsGenericType && raw.GetGenericTypeDefinition() == typeof(VBuffer<>)
            ? typeof(VectorColumnBuffer<>).MakeGenericType(raw.GetGenericArguments()[0])
            : typeof(ScalarColumnBuffer<>).MakeGenericType(raw);
        return (ColumnBuffer)Activator.CreateInstance(bufferType, cursor, column, capacity)!;
    }

    private static ValueGetter<TValue> Cast<TValue, T>(ValueGetter<T> getter, DataViewSchema.Column column) =>
        getter as ValueGetter<TValue>
        ?? throw new InvalidOperationException($"Column '{column.Name}' holds {typeof(T).Name}, not {typeof(TValue).Name}.");

    private sealed class ScalarColumnBuffer<T>(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity) : ColumnBuffer
    {
        private readonly ValueGetter<T> _getter = cursor.GetGetter<T>(column);
        private readonly T[] _values = new T[capacity];

        public override void Capture(int slot) => _getter(ref _values[slot]);

        public override ValueGetter<TValue> GetGetter<TValue>(Func<int> slot)
        {
            ValueGetter<T> g = (ref T value) => value = _values[slot()];
            return Cast<TValue, T>(g, column);
        }
    }

    private sealed class VectorColumnBuffer<TItem>(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity) : ColumnBuffer
    {
        private readonly ValueGetter<VBuffer<TItem>> _getter = cursor.GetGetter<VBuffer<TItem>>(column);
        private readonly VBuffer<TItem>[] _values = new VBuffer<TItem>[capacity];
        private VBuffer<TItem> _scratch;

        public override void Capture(int slot)
        {
            _getter(ref _scratch);
            _scratch.CopyTo(ref _values[slot]);
        }

        public override ValueGetter<TValue> GetGetter<TValue>(Func<int> slot)
        {
            ValueGetter<VBuffer<TItem>> g = (ref VBuffer<TItem> value) => _values[slot()].CopyTo(ref value);
            return Cast<TValue, VBuffer<TItem>>(g, column);
        }
    }
}
