using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.Text;

/// <summary>Validation and reading of text columns, with errors that name the column, expected and found type.</summary>
internal static class TextColumns
{
    /// <summary>The column <paramref name="name"/> of <paramref name="schema"/>, checked; <paramref name="data"/> (say "Validation set") names the view in front of every message, null for the main input.</summary>
    public static DataViewSchema.Column Require(DataViewSchema schema, string name, string? data = null)
    {
        string In(string message) => data is null ? message : $"{data}: {message}";
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(schema),
                In($"Input column '{name}' not found. Available columns: {string.Join(", ", schema.Select(c => $"'{c.Name}'"))}."));
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(schema), In($"Input column '{name}' must be String (text), found {column.Type}."));
        return column;
    }

    public static void Require(SchemaShape schema, string name)
    {
        var column = schema.FirstOrDefault(c => c.Name == name);
        if (column.Name is null)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Input column '{name}' not found.");
        if (column.ItemType is not TextDataViewType || column.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Input column '{name}' must be a scalar String (text), found {column.Kind} of {column.ItemType}.");
    }

    /// <summary>All values of a text column, in row order.</summary>
    public static IEnumerable<string> Read(IDataView data, DataViewSchema.Column column)
    {
        using var cursor = data.GetRowCursor([column]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            yield return value.ToString();
        }
    }
}

/// <summary>
/// The text column, and the second text column of sentence pairs, that a row mapping reads: checked against the input
/// schema (errors name the column and the types), listed as the mapping's dependencies, and read per row.
/// </summary>
internal sealed class TextInputs
{
    public TextInputs(DataViewSchema schema, string text, string? text2)
    {
        Text = TextColumns.Require(schema, text);
        Text2 = text2 is null ? null : TextColumns.Require(schema, text2);
        Dependencies = Text2 is { } c ? [Text, c] : [Text];
    }

    public DataViewSchema.Column Text { get; }
    public DataViewSchema.Column? Text2 { get; }
    public IReadOnlyList<DataViewSchema.Column> Dependencies { get; }

    /// <summary>
    /// Refuses a row whose text the tokenizer reads as empty: it is encoded as <c>[CLS] [SEP]</c>, an input the model
    /// never saw (its trainer skips such rows), and answered with confidence; then <see cref="RequireSecondText"/>.
    /// </summary>
    public void RequireTexts(string text, string? text2, long row, string step)
    {
        if (MissingText(text) is { } found)
            throw new InvalidOperationException($"{step}, row {row}: this model reads column '{Text.Name}', so it needs a text; found {found}.");
        RequireSecondText(text2, row, step);
    }

    /// <summary>
    /// Refuses a pair row without its second text: without it the row is encoded as an input the model never saw
    /// (<c>[CLS] a [SEP] [SEP]</c>) and answered with confidence. <paramref name="step"/> names the transformer in the message.
    /// </summary>
    public void RequireSecondText(string? text2, long row, string step)
    {
        if (Text2 is { } column && MissingText(text2) is { } found)
            throw new InvalidOperationException($"{step}, row {row}: this model reads sentence pairs (columns '{Text.Name}' and " +
                                                $"'{column.Name}'), so it needs a second text; found {found}.");
    }

    /// <summary>
    /// What a text is when the tokenizer reads nothing in it ("none", "an empty one", or one of only characters it
    /// drops: a zero-width space, a NUL, U+FFFD, a combining mark), or null when it holds a word. A text of only such
    /// characters encodes as an empty one (<see cref="TextTokenizingTransformer.HasWordCharacter"/>), so it is refused alike.
    /// </summary>
    public static string? MissingText(string? text) => text is null ? "none"
        : string.IsNullOrWhiteSpace(text) ? "an empty one"
        : TextTokenizingTransformer.HasWordCharacter(text) ? null
        : "one of only whitespace, control, zero-width or private-use characters and combining marks, which encodes as an empty one";

    /// <summary>Reads the current row of <paramref name="row"/>: its text and, for pairs, its second text (else null).</summary>
    public Func<(string Text, string? Text2)> Reader(DataViewRow row)
    {
        var getText = row.GetGetter<ReadOnlyMemory<char>>(Text);
        var getText2 = Text2 is { } c ? row.GetGetter<ReadOnlyMemory<char>>(c) : null;
        ReadOnlyMemory<char> a = default, b = default;
        return () =>
        {
            getText(ref a);
            if (getText2 is null) return (a.ToString(), null);
            getText2(ref b);
            return (a.ToString(), b.ToString());
        };
    }
}

