using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The lazy view <see cref="UllmeEmbeddingTransformer.Transform"/> returns: the input's columns plus the embedding
/// column at index <c>input.Schema.Count</c>. Nothing is stored; every cursor streams from an input cursor.
/// </summary>
internal sealed class UllmeEmbeddingDataView : IDataView
{
    private readonly UllmeEmbeddingTransformer _transformer;
    private readonly IDataView _input;

    public UllmeEmbeddingDataView(UllmeEmbeddingTransformer transformer, IDataView input, DataViewSchema schema)
    {
        _transformer = transformer;
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
        bool embed = needed.Contains(OutputIndex);
        var inputNeeded = needed.Where(i => i < OutputIndex).Select(i => _input.Schema[i]).ToList();
        var textColumn = _input.Schema[_transformer.InputColumnName];
        if (embed && !inputNeeded.Any(c => c.Index == textColumn.Index)) inputNeeded.Add(textColumn);

        var inputCursor = _input.GetRowCursor(inputNeeded, rand);
        return embed
            ? new BatchingCursor(_transformer, inputCursor, Schema, needed, textColumn)
            : new PassThroughCursor(inputCursor, Schema, needed, OutputIndex);
    }

    /// <summary>One cursor: the engine serialises the forward pass anyway, so splitting the rows would only
    /// multiply read-ahead windows, not speed.</summary>
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    /// <summary>Used when the embedding column is not needed: input rows flow through untouched, nothing is embedded.</summary>
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
            if (column.Index == outputIndex || !active.Contains(column.Index))
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
    /// Reads up to <see cref="UllmeEmbeddingOptions.ReadAheadRows"/> rows ahead from the input cursor, copying the
    /// values of every active input column (the input cursor has moved on by the time they are served), embeds the
    /// window's texts in one engine call, then serves the rows in their original order.
    /// </summary>
    private sealed class BatchingCursor : DataViewRowCursor
    {
        private readonly UllmeEmbeddingTransformer _transformer;
        private readonly DataViewRowCursor _input;
        private readonly DataViewSchema _schema;
        private readonly HashSet<int> _active;
        private readonly int _outputIndex;
        private readonly int _window;
        private readonly ValueGetter<ReadOnlyMemory<char>> _textGetter;
        private readonly ValueGetter<DataViewRowId> _inputIdGetter;
        private readonly Dictionary<int, ColumnBuffer> _buffers = [];
        private readonly IChannel _channel;
        private readonly IProgressChannel _progress;
        private string[] _texts;
        private DataViewRowId[] _ids;
        private float[][] _embeddings = [];
        private int _count;      // rows in the current window
        private int _slot = -1;  // current row within the window
        private long _position = -1;
        private long _rowsDone;
        private bool _inputDone;

        public BatchingCursor(UllmeEmbeddingTransformer transformer, DataViewRowCursor input, DataViewSchema schema,
            HashSet<int> active, DataViewSchema.Column textColumn)
        {
            _transformer = transformer;
            _input = input;
            _schema = schema;
            _active = active;
            _outputIndex = input.Schema.Count;
            _window = transformer.Options.EffectiveReadAhead;
            _texts = new string[_window];
            _ids = new DataViewRowId[_window];
            _textGetter = input.GetGetter<ReadOnlyMemory<char>>(textColumn);
            _inputIdGetter = input.GetIdGetter();
            foreach (int i in active)
                if (i < _outputIndex) _buffers[i] = ColumnBuffer.Create(input, input.Schema[i], _window);
            _channel = transformer.Host.Start("UllmeEmbed");
            _progress = transformer.Host.StartProgressChannel("UllmeEmbed");
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
                _textGetter(ref text);
                _texts[_count] = text.ToString();
                _inputIdGetter(ref _ids[_count]);
                foreach (var b in _buffers.Values) b.Capture(_count);
                _count++;
            }
            if (_count < _window) _inputDone = true;
            if (_count == 0) return false;
            _embeddings = _transformer.EmbedWindow(new ArraySegment<string>(_texts, 0, _count), _channel, _position + 1);
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
            if (column.Index == _outputIndex)
            {
                if (typeof(TValue) != typeof(VBuffer<float>))
                    throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}; ask for VBuffer<Single>, not {typeof(TValue).Name}.");
                ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> dst) =>
                {
                    CheckRow();
                    float[] e = _embeddings[_slot];
                    var editor = VBufferEditor.Create(ref dst, e.Length);
                    e.AsSpan().CopyTo(editor.Values);
                    dst = editor.Commit();
                };
                return (ValueGetter<TValue>)(Delegate)getter;
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
                // Drop the window (texts, copied input values, embeddings) so a disposed cursor holds nothing.
                _texts = [];
                _ids = [];
                _embeddings = [];
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
