using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Student;

/// <summary>
/// Output columns of the retrieval classifier for one input schema, their annotations (built with the public
/// <see cref="DataViewSchema.Annotations.Builder"/>), and getters over a scored block. Row-at-a-time getters (for
/// PredictionEngine and shuffled cursors) use the managed single-row path.
/// </summary>
internal sealed class RetrievalClassifierMapping : RowMapping
{
    private readonly RetrievalClassifierTransformer _parent;
    private readonly IHostEnvironment _env;

    public RetrievalClassifierMapping(RetrievalClassifierTransformer parent, DataViewSchema schema, IHostEnvironment env) : base(schema)
    {
        _parent = parent;
        _env = env;
        var columns = parent.Columns;
        Texts = new TextInputs(schema, columns.Text, columns.Text2);

        var names = parent.LabelNames.Select(n => n.AsMemory()).ToArray();
        int k = names.Length;
        ValueGetter<VBuffer<ReadOnlyMemory<char>>> labelNames = (ref VBuffer<ReadOnlyMemory<char>> dst) => dst = new VBuffer<ReadOnlyMemory<char>>(k, (ReadOnlyMemory<char>[])names.Clone());
        var score = new DataViewSchema.Annotations.Builder();
        var namesType = new VectorDataViewType(TextDataViewType.Instance, k);
        score.Add(AnnotationNames.SlotNames, namesType, labelNames); // AddSlotNames/AddKeyValues are internal extensions
        score.Add(AnnotationNames.ScoreColumnKind, TextDataViewType.Instance, (ref ReadOnlyMemory<char> v) => v = "MulticlassClassification".AsMemory());
        score.Add(AnnotationNames.ScoreValueKind, TextDataViewType.Instance, (ref ReadOnlyMemory<char> v) => v = "Score".AsMemory());
        uint setId = NextScoreColumnSetId(schema);
        score.Add(AnnotationNames.ScoreColumnSetId, new KeyDataViewType(typeof(uint), int.MaxValue), (ref uint v) => v = setId);
        score.Add(AnnotationNames.TrainingLabelValues, namesType, labelNames);
        var predicted = new DataViewSchema.Annotations.Builder();
        LabelColumn.AddKeyValues(predicted, parent.LabelNames, columns.LabelValueType);
        var outputs = new List<OutputColumn>
        {
            new(columns.Score, new VectorDataViewType(NumberDataViewType.Single, k), score.ToAnnotations()),
            new(columns.PredictedLabel, new KeyDataViewType(typeof(uint), k), predicted.ToAnnotations()),
        };
        if (columns.Neighbors is { } neighbors)
        {
            outputs.Add(new(neighbors, new VectorDataViewType(TextDataViewType.Instance, columns.NeighborsToReport)));
            outputs.Add(new(neighbors + "Similarities", new VectorDataViewType(NumberDataViewType.Single, columns.NeighborsToReport)));
        }
        Outputs = outputs;
    }

    public TextInputs Texts { get; }
    public RetrievalClassifierTransformer Parent => _parent;
    public override IReadOnlyList<OutputColumn> Outputs { get; }
    public override IReadOnlyList<DataViewSchema.Column> Dependencies => Texts.Dependencies;
    public int ReportedNeighbors => _parent.Columns.Neighbors is null ? 0 : _parent.Columns.NeighborsToReport;

    /// <summary>
    /// A row needs a text with a word, and a sentence-pair model's row its second text, as
    /// <see cref="RetrievalClassifierTransformer.Predict"/> and <c>PredictBatch</c> require (<see cref="TextInputs.RequireTexts"/>).
    /// </summary>
    public void RequireTexts(string text, string? text2, long row) => Texts.RequireTexts(text, text2, row, "RetrievalClassifier");

    /// <summary>Logs a truncation once per cursor/engine.</summary>
    public Action<long> TruncationWarner()
    {
        bool warned = false;
        return position =>
        {
            if (warned) return;
            warned = true;
            new ComponentHost(_env, nameof(RetrievalClassifierTransformer)).Warning(
                $"Row {position}: text is longer than MaxLength = {_parent.MaxLength} tokens and was truncated (further truncations on this cursor are not logged).");
        };
    }

    public override Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive)
    {
        var read = Texts.Reader(input);
        var warn = TruncationWarner();
        var model = _parent.Model;
        var block = new ScoredBlock(1, model.LabelCount, ReportedNeighbors);
        long cachedPosition = long.MinValue;
        string? cachedText = null, cachedText2 = null;
        (ScoredBlock, int) Current()
        {
            var (text, text2) = read();
            if (cachedPosition == input.Position && cachedText == text && cachedText2 == text2) return (block, 0);
            RequireTexts(text, text2, input.Position);
            var ids = model.Tokenize(text, text2, out bool truncated);
            if (truncated) warn(input.Position);
            model.ScoreOne(ids, _parent.Weights, block.Scores, block.NeighborIndices, block.NeighborSimilarities);
            (cachedPosition, cachedText, cachedText2) = (input.Position, text, text2);
            return (block, 0);
        }
        return CreateGetters(Current, isActive);
    }

    /// <summary>Getters reading the current row's results from <paramref name="current"/> (block + row within it).</summary>
    public Delegate?[] CreateGetters(Func<(ScoredBlock Block, int Row)> current, Func<int, bool> isActive)
    {
        var model = _parent.Model;
        int k = model.LabelCount, r = ReportedNeighbors;
        var getters = new Delegate?[Outputs.Count];
        if (isActive(0))
            getters[0] = (ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) =>
            {
                var (block, row) = current();
                var editor = VBufferEditor.Create(ref dst, k);
                block.Scores.AsSpan(row * k, k).CopyTo(editor.Values);
                dst = editor.Commit();
            });
        if (isActive(1))
            getters[1] = (ValueGetter<uint>)((ref uint dst) =>
            {
                var (block, row) = current();
                dst = (uint)RetrievalMix.ArgMax(block.Scores.AsSpan(row * k, k)) + 1;
            });
        if (r > 0 && isActive(2))
            getters[2] = (ValueGetter<VBuffer<ReadOnlyMemory<char>>>)((ref VBuffer<ReadOnlyMemory<char>> dst) =>
            {
                var (block, row) = current();
                var editor = VBufferEditor.Create(ref dst, r);
                for (int j = 0; j < r; j++)
                {
                    int index = block.NeighborIndices[row * r + j];
                    if (index < 0) { editor.Values[j] = ReadOnlyMemory<char>.Empty; continue; }
                    var e = model.Store.Entries[index];
                    var text = e.Text is null ? $"#{index}" : e.Text2 is null ? e.Text : e.Text + RetrievalClassifierTransformer.NeighborPairSeparator + e.Text2;
                    editor.Values[j] = $"[{model.Store.LabelNames[e.Label]}] {text}".AsMemory();
                }
                dst = editor.Commit();
            });
        if (r > 0 && isActive(3))
            getters[3] = (ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) =>
            {
                var (block, row) = current();
                var editor = VBufferEditor.Create(ref dst, r);
                block.NeighborSimilarities.AsSpan(row * r, r).CopyTo(editor.Values);
                dst = editor.Commit();
            });
        return getters;
    }

    private static uint NextScoreColumnSetId(DataViewSchema schema)
    {
        uint max = 0;
        foreach (var column in schema)
        {
            var annotation = column.Annotations.Schema.GetColumnOrNull(AnnotationNames.ScoreColumnSetId);
            if (annotation is not { Type: KeyDataViewType { RawType: var raw } } || raw != typeof(uint)) continue;
            uint id = 0;
            column.Annotations.GetValue(AnnotationNames.ScoreColumnSetId, ref id);
            max = Math.Max(max, id);
        }
        return max + 1;
    }
}

/// <summary>
/// Transform's output view: scores rows in blocks. A cursor passes input columns through from its own input cursor
/// and, when an output is first read inside a new block, reads the next <c>InferenceBatchSize</c> texts from a second
/// (look-ahead) cursor over the same input, encodes them in one forward pass and serves the block's rows from memory.
/// Both cursors see the same rows in the same order because they are unshuffled cursors of one IDataView; a shuffled
/// cursor (non-null Random) falls back to row-at-a-time scoring. Parallel cursor sets are served by one cursor.
/// </summary>
internal sealed class BatchedRetrievalDataView(MappedSchema schema, RetrievalClassifierMapping mapping, IDataView source) : IDataView
{
    public bool CanShuffle => source.CanShuffle;
    public DataViewSchema Schema => schema.OutputSchema;
    public long? GetRowCount() => source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.ToList();
        var active = needed.Select(c => c.Index).ToHashSet();
        if (rand is not null || !active.Any(i => i >= schema.FirstOutput))
            return new MappedDataView(schema, source).GetRowCursor(needed, rand);
        return new BatchedCursor(schema, mapping, source, source.GetRowCursor(schema.InputsFor(needed)), active);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [GetRowCursor(columnsNeeded, rand)];

    private sealed class BatchedCursor : DataViewRowCursor
    {
        private readonly MappedSchema _schema;
        private readonly RetrievalClassifierMapping _mapping;
        private readonly IDataView _source;
        private readonly DataViewRowCursor _input;
        private readonly HashSet<int> _active;
        private readonly Delegate?[] _outputs;
        private readonly Action<long> _warn;
        private DataViewRowCursor? _lookahead;
        private Func<(string Text, string? Text2)>? _read;
        private long _row = -1, _lookaheadRow = -1, _blockStart = -1;
        private ScoredBlock? _block;

        public BatchedCursor(MappedSchema schema, RetrievalClassifierMapping mapping, IDataView source, DataViewRowCursor input, HashSet<int> active)
        {
            _schema = schema;
            _mapping = mapping;
            _source = source;
            _input = input;
            _active = active;
            _warn = mapping.TruncationWarner();
            _outputs = mapping.CreateGetters(Current, i => active.Contains(schema.FirstOutput + i));
        }

        public override DataViewSchema Schema => _schema.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);
        public override ValueGetter<T> GetGetter<T>(DataViewSchema.Column column) => _schema.GetGetter<T>(_input, _outputs, _active, column);

        public override bool MoveNext()
        {
            if (!_input.MoveNext()) return false;
            _row++;
            return true;
        }

        private (ScoredBlock, int) Current()
        {
            if (_row < 0) throw new InvalidOperationException("The cursor is not on a row; call MoveNext first.");
            if (_block is null || _row >= _blockStart + _block.Rows) ReadBlock();
            return (_block!, (int)(_row - _blockStart));
        }

        private void ReadBlock()
        {
            var model = _mapping.Parent.Model;
            if (_lookahead is null)
            {
                _lookahead = _source.GetRowCursor(_mapping.Texts.Dependencies);
                _read = _mapping.Texts.Reader(_lookahead);
            }
            while (_lookaheadRow < _row - 1)
            {
                if (!_lookahead.MoveNext()) throw Diverged();
                _lookaheadRow++;
            }
            int size = _mapping.Parent.Columns.InferenceBatchSize;
            var ids = new List<int[]>(size);
            while (ids.Count < size && _lookahead.MoveNext())
            {
                _lookaheadRow++;
                var (text, text2) = _read!();
                _mapping.RequireTexts(text, text2, _lookaheadRow);
                ids.Add(model.Tokenize(text, text2, out bool truncated));
                if (truncated) _warn(_lookaheadRow);
            }
            if (ids.Count == 0) throw Diverged();
            _block = model.Score(ids, _mapping.Parent.Weights, _mapping.ReportedNeighbors);
            _blockStart = _row;
        }

        private static InvalidOperationException Diverged() => new(
            "RetrievalClassifier: the input view returned fewer rows to the look-ahead cursor than to the main cursor; " +
            "batched scoring needs an IDataView whose unshuffled cursors return the same rows in the same order.");

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _input.Dispose();
                _lookahead?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
