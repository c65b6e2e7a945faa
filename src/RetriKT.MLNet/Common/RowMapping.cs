using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.Common;

/// <summary>An output column a row-mapping transformer adds: name, type and optional annotations.</summary>
internal sealed record OutputColumn(string Name, DataViewType Type, DataViewSchema.Annotations? Annotations = null);

/// <summary>
/// Per-schema mapping logic of a transformer: which input columns it reads, which columns it adds, and how to compute
/// the added values for the current row of a <see cref="DataViewRow"/>. Implementations validate the input schema in
/// their constructor and throw naming the column, expected and found type.
/// </summary>
internal abstract class RowMapping
{
    protected RowMapping(DataViewSchema inputSchema) => InputSchema = inputSchema;

    public DataViewSchema InputSchema { get; }

    /// <summary>The columns this mapping adds (in order).</summary>
    public abstract IReadOnlyList<OutputColumn> Outputs { get; }

    /// <summary>Input columns needed to compute any output.</summary>
    public abstract IReadOnlyList<DataViewSchema.Column> Dependencies { get; }

    /// <summary>
    /// Getters for the outputs, reading from <paramref name="input"/>. <paramref name="isActive"/> tells which outputs
    /// are requested; a getter for an inactive output may be null. Getters of one row share one computation, cached
    /// by <see cref="DataViewRow.Position"/>.
    /// </summary>
    public abstract Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive);
}

/// <summary>
/// Row-to-row plumbing over public ML.NET types only (IDataView, cursor, row, IRowToRowMapper) so a transformer just
/// supplies a <see cref="RowMapping"/>. Input columns pass through; an output with an input's name hides it.
/// </summary>
internal sealed class MappedSchema
{
    public MappedSchema(RowMapping mapping)
    {
        Mapping = mapping;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(mapping.InputSchema);
        FirstOutput = mapping.InputSchema.Count;
        foreach (var output in mapping.Outputs)
            builder.AddColumn(output.Name, output.Type, output.Annotations);
        OutputSchema = builder.ToSchema();
    }

    public RowMapping Mapping { get; }
    public DataViewSchema OutputSchema { get; }
    public int FirstOutput { get; }

    public IEnumerable<DataViewSchema.Column> InputsFor(IEnumerable<DataViewSchema.Column> requested)
    {
        var needed = new HashSet<int>();
        foreach (var column in requested)
        {
            if (column.Index < FirstOutput) needed.Add(column.Index);
            else foreach (var dependency in Mapping.Dependencies) needed.Add(dependency.Index);
        }
        return needed.OrderBy(i => i).Select(i => Mapping.InputSchema[i]);
    }

    public Delegate?[] GettersFor(DataViewRow input, HashSet<int> active)
        => active.Any(i => i >= FirstOutput)
            ? Mapping.CreateGetters(input, i => active.Contains(FirstOutput + i))
            : new Delegate?[Mapping.Outputs.Count];

    public ValueGetter<T> GetGetter<T>(DataViewRow input, Delegate?[] outputs, HashSet<int> active, DataViewSchema.Column column)
    {
        if (!active.Contains(column.Index))
            throw new InvalidOperationException($"Column '{column.Name}' was not requested from this cursor.");
        if (column.Index < FirstOutput)
            return input.GetGetter<T>(input.Schema[column.Index]);
        return outputs[column.Index - FirstOutput] as ValueGetter<T>
            ?? throw new InvalidOperationException(
                $"Column '{column.Name}' has type {column.Type}; a getter of {typeof(T).Name} was requested.");
    }
}

internal sealed class MappedRowToRowMapper(MappedSchema schema) : IRowToRowMapper
{
    public DataViewSchema InputSchema => schema.Mapping.InputSchema;
    public DataViewSchema OutputSchema => schema.OutputSchema;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
        => schema.InputsFor(dependingColumns);

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        => new MappedRow(schema, input, activeColumns.Select(c => c.Index).ToHashSet());

    private sealed class MappedRow : DataViewRow
    {
        private readonly MappedSchema _schema;
        private readonly DataViewRow _input;
        private readonly HashSet<int> _active;
        private readonly Delegate?[] _outputs;

        public MappedRow(MappedSchema schema, DataViewRow input, HashSet<int> active)
        {
            _schema = schema;
            _input = input;
            _active = active;
            _outputs = schema.GettersFor(input, active);
        }

        public override DataViewSchema Schema => _schema.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);
        public override ValueGetter<T> GetGetter<T>(DataViewSchema.Column column) => _schema.GetGetter<T>(_input, _outputs, _active, column);
    }
}

internal sealed class MappedDataView(MappedSchema schema, IDataView source) : IDataView
{
    public bool CanShuffle => source.CanShuffle;
    public DataViewSchema Schema => schema.OutputSchema;
    public long? GetRowCount() => source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.ToList();
        return new MappedCursor(schema, source.GetRowCursor(schema.InputsFor(needed), rand), needed.Select(c => c.Index).ToHashSet());
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var needed = columnsNeeded.ToList();
        var active = needed.Select(c => c.Index).ToHashSet();
        return source.GetRowCursorSet(schema.InputsFor(needed), n, rand)
            .Select(cursor => (DataViewRowCursor)new MappedCursor(schema, cursor, active)).ToArray();
    }

    private sealed class MappedCursor : DataViewRowCursor
    {
        private readonly MappedSchema _schema;
        private readonly DataViewRowCursor _input;
        private readonly HashSet<int> _active;
        private readonly Delegate?[] _outputs;

        public MappedCursor(MappedSchema schema, DataViewRowCursor input, HashSet<int> active)
        {
            _schema = schema;
            _input = input;
            _active = active;
            _outputs = schema.GettersFor(input, active);
        }

        public override DataViewSchema Schema => _schema.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override bool MoveNext() => _input.MoveNext();
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);
        public override ValueGetter<T> GetGetter<T>(DataViewSchema.Column column) => _schema.GetGetter<T>(_input, _outputs, _active, column);

        protected override void Dispose(bool disposing)
        {
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}

/// <summary>
/// Base for RetriKT's row-to-row transformers: public <see cref="ITransformer"/> surface, persistence through the
/// bridge, lazy <see cref="Transform"/>. Subclasses provide the mapping and the saved state.
/// </summary>
public abstract class RowMappingTransformer : ITransformer
{
    private protected RowMappingTransformer() { }

    private protected abstract RowMapping CreateMapping(DataViewSchema inputSchema);

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
        => new MappedSchema(CreateMapping(inputSchema ?? throw new ArgumentNullException(nameof(inputSchema)))).OutputSchema;

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new MappedDataView(new MappedSchema(CreateMapping(input.Schema)), input);
    }

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new MappedRowToRowMapper(new MappedSchema(CreateMapping(inputSchema)));
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => SaveModel(ctx);

    private protected abstract void SaveModel(ModelSaveContext ctx);
}
