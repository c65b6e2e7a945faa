using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>One row of an extracted store as an ML.NET row (see <see cref="KnowledgeStoreData.ToDataView"/>).</summary>
public sealed class KnowledgeRow
{
    /// <summary>First text.</summary>
    public string Text { get; set; } = "";
    /// <summary>Second text (empty for single-sentence tasks).</summary>
    public string Text2 { get; set; } = "";
    /// <summary>Label name.</summary>
    public string Label { get; set; } = "";
    /// <summary>The teacher's probability per label (store label order).</summary>
    public float[] SoftLabel { get; set; } = [];
    /// <summary>Teacher probability of the intended label.</summary>
    public float Fidelity { get; set; }
    /// <summary>Where the entry came from: a <see cref="KnowledgeSource"/> name ("FewShot", "Generated", "Imported", "Variant" or "Unlabeled").</summary>
    public string Source { get; set; } = "";
}

/// <summary>
/// Result of <see cref="KnowledgeExtractor"/>: the knowledge <see cref="Store"/> (and its <see cref="Report"/>), with
/// the soft prompts that produced it. Transform adds <c>SoftLabel</c> (the teacher's verbalizer probabilities, slot
/// names = labels) to any rows with the template's text columns — the same labelling the store's entries got.
/// </summary>
public sealed class KnowledgeExtractorTransformer : RowMappingTransformer, IDisposable
{
    /// <summary>Since this version the verbalizer's calibration switch is stored (older files were labelled calibrated, the default).</summary>
    private const uint CalibrationVersion = 0x00010002;
    internal static readonly ModelFormat Format = new("RKTEXTRC", CalibrationVersion, 0x00010001, "RetriKTKnowledgeExtract") { LoaderAssembly = typeof(KnowledgeExtractorTransformer).Assembly };
    internal const string SoftLabelColumn = "SoftLabel";
    private VerbalizerClassifier? _scorer;
    private volatile bool _disposed;

    // calibratedVerbalizer: whether the store's soft labels were calibrated (KnowledgeExtractorOptions.CalibrateVerbalizer); Transform labels as they were.
    // ownsSoftPrompts: whether Dispose releases the prompts (fitted by the extractor or loaded from model.zip), not the caller's.
    internal KnowledgeExtractorTransformer(IHostEnvironment env, SoftPromptTransformer softPrompts, KnowledgeStore store, ExtractionReport? report,
        bool calibratedVerbalizer = true, bool ownsSoftPrompts = false)
    {
        SoftPrompts = softPrompts;
        Store = store;
        Report = report;
        CalibratedVerbalizer = calibratedVerbalizer;
        _ownsSoftPrompts = ownsSoftPrompts;
    }

    private readonly bool _ownsSoftPrompts;

    /// <summary>The soft prompts (and, through them, the teacher reference).</summary>
    public SoftPromptTransformer SoftPrompts { get; }
    /// <summary>The extracted store (texts and soft labels; no embeddings: the student adds them).</summary>
    public KnowledgeStore Store { get; }
    /// <summary>What the extraction kept and dropped (null after loading from model.zip).</summary>
    public ExtractionReport? Report { get; }
    /// <summary>
    /// Whether the store's soft labels were contextually calibrated, so Transform labels rows as the store's entries were
    /// labelled (before, Transform always calibrated, and after an extraction without calibration it gave other soft labels
    /// than the store's, another argmax for some texts).
    /// </summary>
    internal bool CalibratedVerbalizer { get; }

    /// <summary>The store as an IDataView: Text, Text2, Label, SoftLabel (vector, SlotNames = labels), Fidelity, Source (<see cref="KnowledgeStoreData"/>).</summary>
    public IDataView ToDataView(MLContext mlContext) => Store.ToDataView(mlContext);

    /// <summary>
    /// The teacher's soft label of one row, scored under the soft prompts' lock: disposing this model (or the caller's
    /// prompts) while another thread scores waits for that row, where it freed the teacher under the forward pass, and a
    /// row scored after that throws ObjectDisposedException.
    /// </summary>
    private float[] SoftLabelOf(string text, string? text2)
    {
        try
        {
            return SoftPrompts.WithTeacher(teacher =>
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return (_scorer ??= new VerbalizerClassifier(teacher, SoftPrompts.Template, SoftPrompts.Labels, CalibratedVerbalizer)).Probabilities([(text, text2)])[0];
            });
        }
        catch (ObjectDisposedException) when (_disposed)
        {
            ObjectDisposedException.ThrowIf(true, this); // this model's own prompts were released with it: name the model
            throw;
        }
    }

    private protected override RowMapping CreateMapping(DataViewSchema inputSchema) => new Mapping(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx) => ModelWriter.Save(ctx, Format, w =>
    {
        w.WriteModel(SoftPrompts, "SoftPrompts");
        w.Writer.Write(CalibratedVerbalizer);
        w.WriteStream("Store.bin", s => Store.Write(s.BaseStream));
    });

    internal static KnowledgeExtractorTransformer Load(ModelReader r)
    {
        var prompts = r.ReadModel<SoftPromptTransformer>("SoftPrompts");
        try
        {
            bool calibrated = r.Version < CalibrationVersion || r.Reader.ReadBoolean();
            KnowledgeStore? store = null;
            r.ReadStream("Store.bin", s => store = KnowledgeStore.Read(s.BaseStream, StoreReadLimits.ForPart(s.BaseStream.Length)));
            CheckLabels(store!, prompts);
            return new KnowledgeExtractorTransformer(r.Environment, prompts, store!, null, calibrated, ownsSoftPrompts: true);
        }
        catch
        {
            prompts.Dispose(); // releases the teacher the soft prompts loaded for this model
            throw;
        }
    }

    /// <summary>
    /// The store's soft labels and the SoftLabel column follow the soft prompts' label order (the scorer's): a store
    /// with other labels, or the same in another order, would give each probability another label's name.
    /// </summary>
    private static void CheckLabels(KnowledgeStore store, SoftPromptTransformer prompts)
    {
        if (!store.LabelNames.SequenceEqual(prompts.Labels, StringComparer.Ordinal))
            throw new InvalidDataException($"model.zip: Store.bin holds labels [{string.Join(", ", store.LabelNames)}], but its soft prompts are for " +
                $"[{string.Join(", ", prompts.Labels)}] (in that order).");
    }

    /// <summary>
    /// Releases the soft prompts' teacher when the prompts are this extraction's own: fitted by the extractor
    /// (<see cref="KnowledgeExtractorOptions.SoftPromptOptions"/>) or loaded from model.zip. Prompts given in
    /// <see cref="KnowledgeExtractorOptions.SoftPrompts"/> stay the caller's (before, disposing the extraction released their
    /// teacher, and the caller's next use of them failed with a bare ObjectDisposedException).
    /// </summary>
    public void Dispose()
    {
        _disposed = true; // also when the prompts stay the caller's: a disposed model scores nothing
        if (_ownsSoftPrompts) SoftPrompts.Dispose();
    }

    private sealed class Mapping : RowMapping
    {
        private readonly KnowledgeExtractorTransformer _parent;
        private readonly DataViewSchema.Column _text;
        private readonly DataViewSchema.Column? _text2;

        public Mapping(KnowledgeExtractorTransformer parent, DataViewSchema schema) : base(schema)
        {
            _parent = parent;
            var template = parent.SoftPrompts.Template;
            template.CheckTextColumns(SchemaShapes.Of(schema));
            _text = schema[template.TextColumn];
            _text2 = template.Text2Column is null ? null : schema[template.Text2Column];
            var slotNames = new VBuffer<ReadOnlyMemory<char>>(parent.Store.LabelCount, parent.Store.LabelNames.Select(n => n.AsMemory()).ToArray());
            var annotations = new DataViewSchema.Annotations.Builder();
            annotations.Add("SlotNames", new VectorDataViewType(TextDataViewType.Instance, parent.Store.LabelCount),
                (ref VBuffer<ReadOnlyMemory<char>> dst) => slotNames.CopyTo(ref dst));
            Outputs = [new OutputColumn(SoftLabelColumn, new VectorDataViewType(NumberDataViewType.Single, parent.Store.LabelCount), annotations.ToAnnotations())];
            Dependencies = _text2 is { } c2 ? [_text, c2] : [_text];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }
        public override IReadOnlyList<DataViewSchema.Column> Dependencies { get; }

        public override Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive)
        {
            var getText = input.GetGetter<ReadOnlyMemory<char>>(_text);
            var getText2 = _text2 is { } c ? input.GetGetter<ReadOnlyMemory<char>>(c) : null;
            ReadOnlyMemory<char> a = default, b = default;
            var template = _parent.SoftPrompts.Template;
            return [(ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) =>
            {
                getText(ref a);
                getText2?.Invoke(ref b);
                var (text, text2) = (a.ToString(), getText2 is null ? null : b.ToString());
                // The texts the store's labelling refuses (UnlabeledData): the teacher's label of nothing looks like any other.
                if (template.MissingText(text, text2) is { } missing)
                    throw new InvalidOperationException($"KnowledgeExtractor row {input.Position}: {missing}");
                float[] p = _parent.SoftLabelOf(text, text2);
                var editor = VBufferEditor.Create(ref dst, p.Length);
                p.AsSpan().CopyTo(editor.Values);
                dst = editor.Commit();
            })];
        }
    }
}
