using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// What the extractor refuses when it is built or its schema is propagated, before any prompt tuning or generation:
/// filters no sample could pass (or that are silently off), and inputs without the columns Fit reads. No teacher is
/// loaded: the prompts are given as options to fit, with a teacher path that is never opened.
/// </summary>
public class KnowledgeExtractorValidationTests
{
    private static KnowledgeExtractorOptions Options() => new()
    {
        SoftPromptOptions = new SoftPromptPpoOptions { TeacherPath = "never-loaded.bin", Template = SoftPromptPpoTrainerTests.StoryMood },
    };

    [Theory]
    [InlineData("MinWords", "-3", "MinWords must be >= 1 (or null for the template's), found -3.")]
    [InlineData("MinWords", "0", "MinWords must be >= 1 (or null for the template's), found 0.")]
    [InlineData("MaxWords", "0", "MaxWords must be >= 1, found 0.")]
    // The template's MinWords (3) when MinWords is unset.
    [InlineData("MaxWords", "2", "MaxWords (2) must be >= the MinWords of template 'StoryMood' (3): no sample could pass both.")]
    [InlineData("NearDuplicateThreshold", "-1", "NearDuplicateThreshold must be in [0, 1] (1 turns the filter off), found -1.")]
    [InlineData("NearDuplicateThreshold", "1.5", "NearDuplicateThreshold must be in [0, 1] (1 turns the filter off), found 1.5.")]
    [InlineData("NearDuplicateThreshold", "NaN", "NearDuplicateThreshold must be in [0, 1] (1 turns the filter off), found NaN.")]
    [InlineData("FluencyMargin", "NaN", "FluencyMargin must be a finite number of nats per token, found NaN.")]
    [InlineData("FluencyMargin", "Infinity", "FluencyMargin must be a finite number of nats per token, found Infinity.")]
    [InlineData("FidelityThreshold", "NaN", "FidelityThreshold must be in [0, 1], found NaN.")]
    [InlineData("FidelityThreshold", "-0.1", "FidelityThreshold must be in [0, 1], found -0.1.")]
    [InlineData("MaxAttemptsFactor", "NaN", "MaxAttemptsFactor must be a finite number >= 1, found NaN.")]
    [InlineData("MaxAttemptsFactor", "Infinity", "MaxAttemptsFactor must be a finite number >= 1, found Infinity.")]
    [InlineData("BatchSize", "0", "BatchSize must be positive, found 0.")]
    [InlineData("SamplesPerLabel", "-1", "SamplesPerLabel must be >= 0, found -1.")]
    public void AnOptionOutOfRangeIsRefusedWhenTheExtractorIsBuilt(string field, string value, string expected)
    {
        var options = Options();
        var info = typeof(KnowledgeExtractorOptions).GetField(field)!;
        var type = Nullable.GetUnderlyingType(info.FieldType) ?? info.FieldType;
        info.SetValue(options, Convert.ChangeType(value, type, CultureInfo.InvariantCulture));

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new MLContext().RetriKT().KnowledgeExtractor(options));
        Assert.Equal(expected, e.Message);
    }

    /// <summary>
    /// A context text with no word in it (blank, or only characters the tokenizer drops) gives every sample generated
    /// after it an empty first part, which the Empty filter drops: it was accepted, and spent generation that showed
    /// only in the drop counts. It is refused when the extractor is built, naming its index.
    /// </summary>
    [Theory]
    [InlineData(" ", "ContextTexts[1] is empty; expected a first part for the teacher to write a second part after.")]
    [InlineData("\u200B", "ContextTexts[1] holds only characters the tokenizer drops (control, zero-width or private-use characters, combining marks), so it encodes as an empty one; expected a first part for the teacher to write a second part after.")]
    public void AContextTextWithoutAWordIsRefusedWhenTheExtractorIsBuilt(string blank, string expected)
    {
        var options = Options();
        options.ContextTexts = ["Tom had a red ball.", blank, "Sue ran home."];
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new MLContext().RetriKT().KnowledgeExtractor(options));
        Assert.Equal(expected, e.Message);
    }

    [Fact]
    public void MaxWordsBelowMinWordsIsRefusedAndTheDefaultsAndEdgesAreAccepted()
    {
        var options = Options();
        (options.MinWords, options.MaxWords) = (10, 5);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new MLContext().RetriKT().KnowledgeExtractor(options));
        Assert.Equal("MaxWords (5) must be >= MinWords (10): no sample could pass both.", e.Message);

        new MLContext().RetriKT().KnowledgeExtractor(Options());
        var edges = Options();
        (edges.MinWords, edges.MaxWords, edges.NearDuplicateThreshold, edges.FluencyMargin, edges.FidelityThreshold, edges.SamplesPerLabel) = (1, 1, 1, -0.5, 1, 0);
        new MLContext().RetriKT().KnowledgeExtractor(edges);
        // A template whose MinWords the extractor's MinWords replaces: only the extractor's counts.
        var own = Options();
        (own.MinWords, own.MaxWords) = (2, 2);
        new MLContext().RetriKT().KnowledgeExtractor(own);
    }

    [Fact]
    public void GetOutputSchemaChecksTheColumnsFitReadsAndNamesTheLabelsSlots()
    {
        var ml = new MLContext(seed: 1);
        var data = SoftPromptPpoTrainerTests.StoryData(ml);
        var extractor = ml.RetriKT().KnowledgeExtractor(Options());

        var shape = extractor.GetOutputSchema(SchemaShapes.Of(data.Schema));
        var soft = Assert.Single(shape, c => c.Name == "SoftLabel");
        Assert.Equal(SchemaShape.Column.VectorKind.Vector, soft.Kind);
        Assert.Equal(NumberDataViewType.Single, soft.ItemType);
        var slotNames = Assert.Single(soft.Annotations, c => c.Name == "SlotNames");
        Assert.Equal(TextDataViewType.Instance, slotNames.ItemType);
        Assert.Contains(shape, c => c.Name == "Text");
        // A key label with its text values (MapValueToKey) is read as well as a String one.
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").GetOutputSchema(SchemaShapes.Of(data.Schema));
        Assert.Contains(extractor.GetOutputSchema(keyed), c => c.Name == "SoftLabel");

        var noText = ml.Data.LoadFromEnumerable(new[] { new LabelOnly { Label = "happy" } });
        const string textError = "Column 'Text' (String) is needed by template 'StoryMood'; found no such column. Columns: 'Label'.";
        Assert.Equal(textError, Assert.Throws<ArgumentOutOfRangeException>(() => extractor.GetOutputSchema(SchemaShapes.Of(noText.Schema))).Message);
        // Fit makes the same check first: it fails before loading the teacher (whose path does not exist).
        Assert.Equal(textError, Assert.Throws<ArgumentOutOfRangeException>(() => extractor.Fit(noText)).Message);

        var numberText = ml.Data.LoadFromEnumerable(new[] { new NumberText { Text = 1, Label = "happy" } });
        Assert.Equal("Column 'Text' (String) is needed by template 'StoryMood'; found Single.",
            Assert.Throws<ArgumentOutOfRangeException>(() => extractor.GetOutputSchema(SchemaShapes.Of(numberText.Schema))).Message);

        var numberLabel = ml.Data.LoadFromEnumerable(new[] { new NumberLabel { Text = "Lily was happy.", Label = 1 } });
        const string labelError = "Label column 'Label' must be String or a key type with text key values, found Int32.";
        Assert.Equal(labelError, Assert.Throws<ArgumentOutOfRangeException>(() => extractor.GetOutputSchema(SchemaShapes.Of(numberLabel.Schema))).Message);
        Assert.Equal(labelError, Assert.Throws<ArgumentOutOfRangeException>(() => extractor.Fit(numberLabel)).Message);

        var noLabel = ml.Data.LoadFromEnumerable(new[] { new TextOnly { Text = "Lily was happy." } });
        Assert.Equal("Label column 'Label' not found. Columns: 'Text'.",
            Assert.Throws<ArgumentOutOfRangeException>(() => extractor.GetOutputSchema(SchemaShapes.Of(noLabel.Schema))).Message);
    }

    private sealed class LabelOnly { public string Label { get; set; } = ""; }
    private sealed class TextOnly { public string Text { get; set; } = ""; }
    private sealed class NumberText { public float Text { get; set; } public string Label { get; set; } = ""; }
    private sealed class NumberLabel { public string Text { get; set; } = ""; public int Label { get; set; } }
}
