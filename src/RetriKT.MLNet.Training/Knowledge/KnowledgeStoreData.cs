using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// A knowledge store as ML.NET data and back. The view has the columns Text, Text2, Label (label name), SoftLabel
/// (one probability per label; its SlotNames annotation names the labels in store order), Fidelity and Source: what
/// extraction produces (white-box and black-box alike) and what the RetrievalClassifier trainer takes, so a store can
/// be saved, inspected, filtered or brought from elsewhere with ML.NET's own data API.
/// </summary>
public static class KnowledgeStoreData
{
    /// <summary>Column names of the store view.</summary>
    public static class Columns
    {
        /// <summary>"Text".</summary>
        public const string Text = "Text";
        /// <summary>"Text2".</summary>
        public const string Text2 = "Text2";
        /// <summary>"Label".</summary>
        public const string Label = "Label";
        /// <summary>"SoftLabel".</summary>
        public const string SoftLabel = "SoftLabel";
        /// <summary>"Fidelity".</summary>
        public const string Fidelity = "Fidelity";
        /// <summary>"Source".</summary>
        public const string Source = "Source";
    }

    /// <summary>
    /// The store as an IDataView: Text, Text2, Label, SoftLabel (vector, SlotNames = label names), Fidelity, Source.
    /// A missing text or second text is an empty string.
    /// </summary>
    public static IDataView ToDataView(this KnowledgeStore store, MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(mlContext);
        var schema = SchemaDefinition.Create(typeof(KnowledgeRow));
        var softLabel = schema[nameof(KnowledgeRow.SoftLabel)];
        softLabel.ColumnType = new VectorDataViewType(NumberDataViewType.Single, store.LabelCount);
        // The label order is part of the data (SoftLabel slot i is label i); a view from elsewhere may lack it, so it travels as SlotNames.
        var names = new VBuffer<ReadOnlyMemory<char>>(store.LabelCount, store.LabelNames.Select(n => n.AsMemory()).ToArray());
        softLabel.AddAnnotation(AnnotationNames.SlotNames, names, new VectorDataViewType(TextDataViewType.Instance, store.LabelCount));
        var rows = store.Entries.Select(e => new KnowledgeRow
        {
            Text = e.Text ?? "", Text2 = e.Text2 ?? "", Label = store.LabelNames[e.Label], SoftLabel = e.SoftLabel,
            Fidelity = e.Fidelity, Source = e.Source.ToString(),
        });
        return mlContext.Data.LoadFromEnumerable(rows, schema);
    }

    /// <summary>
    /// Reads a store view (see <see cref="ToDataView"/>). Required: Text (String), Label (String or key), SoftLabel
    /// (vector of Single). Optional: Text2 (String; empty = none), Fidelity (Single; default the soft label's
    /// probability of Label) and Source (String: FewShot, Generated, Imported, Variant or Unlabeled; default Imported). The label names
    /// are SoftLabel's SlotNames, else <paramref name="labelNames"/> (then a view whose labels' rows mostly rank another
    /// label first, one other label each, fails: its slots are in another order). A Label value is matched to the names
    /// without white space at either end, as label columns are read (names that differ only there fail). An empty Text on every row reads as a store
    /// without texts. Errors name the column, the expected and found type, and the row of a bad value.
    /// </summary>
    public static KnowledgeStore FromDataView(IDataView data, IReadOnlyList<string>? labelNames = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        var schema = data.Schema;
        var text = Column(schema, Columns.Text, required: true, t => t is TextDataViewType, "String")!.Value;
        var text2 = Column(schema, Columns.Text2, required: false, t => t is TextDataViewType, "String");
        var soft = Column(schema, Columns.SoftLabel, required: true,
            t => t is VectorDataViewType { ItemType: NumberDataViewType n } && n.RawType == typeof(float), "a vector of Single")!.Value;
        var fidelity = Column(schema, Columns.Fidelity, required: false, t => t == NumberDataViewType.Single, "Single");
        var source = Column(schema, Columns.Source, required: false, t => t is TextDataViewType, "String");
        var label = LabelColumn.Require(schema, Columns.Label);

        var slotNames = SlotNames(soft);
        var names = slotNames ?? labelNames?.ToArray()
            ?? throw new ArgumentException($"Knowledge store column '{Columns.SoftLabel}' has no SlotNames annotation naming its labels, and no label names were given.");
        // A label named twice would make a label's slot ambiguous (and the lookup below a bare dictionary error).
        if (names.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } repeated)
        {
            string times = repeated.Count() == 2 ? "twice" : $"{repeated.Count()} times";
            throw new ArgumentException(slotNames is not null
                ? $"Knowledge store column '{Columns.SoftLabel}': SlotNames name label '{repeated.Key}' {times}."
                : $"Knowledge store column '{Columns.SoftLabel}': the label names given name label '{repeated.Key}' {times}.");
        }
        int k = names.Length;
        int size = ((VectorDataViewType)soft.Type).Size;
        if (size != 0 && size != k)
            throw new ArgumentOutOfRangeException(nameof(data),
                $"Knowledge store column '{Columns.SoftLabel}': expected a vector of Single with {k} values (one per label: {string.Join(", ", names)}), found {soft.Type}.");
        // The Label column is read trimmed (LabelColumn), so a name is looked up trimmed too: a store whose label name ends
        // in a space ('negative ') failed its own view's round trip ("label 'negative' is not one of [negative , positive]").
        // Names that differ only there could not be told apart.
        if (names.GroupBy(n => n.Trim(), StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } alike)
            throw new ArgumentException($"Knowledge store column '{Columns.SoftLabel}': {(slotNames is not null ? "SlotNames name" : "the label names given name")} labels " +
                                        $"{string.Join(" and ", alike.Select(n => $"'{n}'"))}, which differ only by white space at their ends; the '{Columns.Label}' column " +
                                        "is read without it, so its values could not tell them apart.");
        var index = names.Select((n, i) => (n.Trim(), i)).ToDictionary(p => p.Item1, p => p.i, StringComparer.Ordinal);

        var columns = new List<DataViewSchema.Column> { text, soft, label.Column };
        foreach (var c in new[] { text2, fidelity, source }) if (c is { } present) columns.Add(present);
        using var cursor = data.GetRowCursor(columns);
        var getText = cursor.GetGetter<ReadOnlyMemory<char>>(text);
        var getText2 = text2 is { } t2 ? cursor.GetGetter<ReadOnlyMemory<char>>(t2) : null;
        var getSoft = cursor.GetGetter<VBuffer<float>>(soft);
        var getFidelity = fidelity is { } f ? cursor.GetGetter<float>(f) : null;
        var getSource = source is { } s ? cursor.GetGetter<ReadOnlyMemory<char>>(s) : null;
        var readLabel = label.Reader(cursor);
        ReadOnlyMemory<char> a = default, b = default, from = default;
        VBuffer<float> probabilities = default;
        float fidelityValue = 0;
        var entries = new List<KnowledgeEntry>();
        long row = -1;
        int withText = 0;
        while (cursor.MoveNext())
        {
            row++;
            string Where(string column) => $"Knowledge store column '{column}', row {row}";
            getText(ref a);
            getText2?.Invoke(ref b);
            getSoft(ref probabilities);
            var name = readLabel() ?? throw new ArgumentException($"{Where(Columns.Label)}: the label is missing.");
            if (!index.TryGetValue(name, out int labelIndex))
                throw new ArgumentException($"{Where(Columns.Label)}: label '{name}' is not one of the store's labels [{string.Join(", ", names)}].");
            var p = probabilities.DenseValues().ToArray();
            if (p.Length != k) throw new ArgumentException($"{Where(Columns.SoftLabel)}: {p.Length} values, expected {k} (one per label).");
            double sum = 0;
            foreach (var x in p)
            {
                if (!float.IsFinite(x) || x < 0) throw new ArgumentException($"{Where(Columns.SoftLabel)}: {x} is not a probability (finite and >= 0).");
                sum += x;
            }
            // The same tolerance as KnowledgeStore's own check; checked here so the message names the row of the view.
            if (Math.Abs(sum - 1) > 1e-3) throw new ArgumentException($"{Where(Columns.SoftLabel)}: the probabilities sum to {sum:G6}, expected 1.");
            getFidelity?.Invoke(ref fidelityValue);
            float fid = getFidelity is null ? p[labelIndex] : fidelityValue;
            if (!float.IsFinite(fid)) throw new ArgumentException($"{Where(Columns.Fidelity)}: {fid} is not a finite number.");
            var origin = KnowledgeSource.Imported;
            if (getSource is not null)
            {
                getSource(ref from);
                var value = from.ToString();
                origin = KnowledgeSourceNames.Parse(value)
                    ?? throw new ArgumentException($"{Where(Columns.Source)}: '{value}' is not one of {string.Join(", ", Enum.GetNames<KnowledgeSource>())}.");
            }
            // ToDataView writes a missing text as "": read it back as missing, so a store survives the round trip unchanged.
            var first = a.Length == 0 ? null : a.ToString();
            if (first is not null) withText++;
            entries.Add(new KnowledgeEntry(first, getText2 is null || b.Length == 0 ? null : b.ToString(), labelIndex, p, fid, origin));
        }
        // A store saved without SlotNames (SaveAsText, a file of one's own) read in another order than it was written in (the
        // training keys' first-occurrence order, say) would give every entry another label's probabilities (SoftLabelOrder).
        // Every row is an entry, so an entry's index is its row.
        if (slotNames is null && SoftLabelOrder.Find(entries, k) is { } moved)
        {
            string order = $"Knowledge store column '{Columns.SoftLabel}' has no SlotNames, and read in the label order [{string.Join(", ", names)}] ";
            var first = entries[moved.First];
            throw new ArgumentException(moved.ByFewShot
                ? order + $"{moved.Count} of the {moved.Of} few-shot rows (gold labels, one-hot soft labels) give another label than theirs the highest probability " +
                  $"(the first: row {moved.First}, label '{names[first.Label]}', SoftLabel [{SoftLabelOrder.Probabilities(first.SoftLabel)}]); the slots are in another order than these names. " +
                  "Give the store with its SlotNames (ToDataView, SaveAsBinary)."
                : order + $"{moved.Count} of the {moved.Of} rows labelled '{names[moved.Label]}' in column '{Columns.Label}' give label '{names[moved.RankedFirst]}' the highest probability " +
                  $"(the first: row {moved.First}, SoftLabel [{SoftLabelOrder.Probabilities(first.SoftLabel)}]); " +
                  "the slots are in another order than these names, or the store teaches every label as another. Give the store with its SlotNames (ToDataView, SaveAsBinary).");
        }
        if (withText != 0 && withText != entries.Count)
        {
            int missing = entries.FindIndex(e => e.Text is null);
            throw new ArgumentException($"Knowledge store column '{Columns.Text}', row {missing}: the text is empty, but other rows have texts; a store has texts on every row or on none.");
        }
        return new KnowledgeStore(names, entries);
    }

    private static DataViewSchema.Column? Column(DataViewSchema schema, string name, bool required, Func<DataViewType, bool> accepts, string expected)
    {
        var column = schema.GetColumnOrNull(name);
        if (column is null)
        {
            if (!required) return null;
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Knowledge store column '{name}' ({expected}) not found. Available columns: {string.Join(", ", schema.Select(c => $"'{c.Name}'"))}.");
        }
        if (!accepts(column.Value.Type))
            throw new ArgumentOutOfRangeException(nameof(schema), $"Knowledge store column '{name}': expected {expected}, found {column.Value.Type}.");
        return column;
    }

    private static string[]? SlotNames(DataViewSchema.Column soft)
    {
        if (soft.Annotations.Schema.GetColumnOrNull(AnnotationNames.SlotNames) is not { Type: VectorDataViewType { ItemType: TextDataViewType } }) return null;
        VBuffer<ReadOnlyMemory<char>> names = default;
        soft.Annotations.GetValue(AnnotationNames.SlotNames, ref names);
        var result = names.DenseValues().Select(n => n.ToString()).ToArray();
        return result.Length == 0 ? null : result;
    }
}
