using System.Globalization;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.RoundTrip;

/// <summary>
/// Writes every visible column of an <see cref="IDataView"/> as text, one line per row, so two processes can compare
/// outputs exactly (floats in round-trip "R" format).
/// </summary>
public static class DataViewDump
{
    public static List<string> Rows(IDataView data)
    {
        var columns = data.Schema.Where(c => !c.IsHidden).ToList();
        var lines = new List<string> { string.Join('\t', columns.Select(c => $"{c.Name}:{c.Type}")) };
        using var cursor = data.GetRowCursor(columns);
        var readers = columns.Select(c => Reader(cursor, c)).ToList();
        while (cursor.MoveNext())
            lines.Add(string.Join('\t', readers.Select(r => r())));
        return lines;
    }

    private static Func<string> Reader(DataViewRow row, DataViewSchema.Column column)
    {
        var type = column.Type;
        var item = type is VectorDataViewType v ? v.ItemType : type;
        return item.RawType switch
        {
            Type t when t == typeof(float) => Make<float>(row, column, x => x.ToString("R", CultureInfo.InvariantCulture)),
            Type t when t == typeof(double) => Make<double>(row, column, x => x.ToString("R", CultureInfo.InvariantCulture)),
            Type t when t == typeof(int) => Make<int>(row, column, x => x.ToString(CultureInfo.InvariantCulture)),
            Type t when t == typeof(long) => Make<long>(row, column, x => x.ToString(CultureInfo.InvariantCulture)),
            Type t when t == typeof(uint) => Make<uint>(row, column, x => x.ToString(CultureInfo.InvariantCulture)),
            Type t when t == typeof(bool) => Make<bool>(row, column, x => x ? "true" : "false"),
            Type t when t == typeof(ReadOnlyMemory<char>) => Make<ReadOnlyMemory<char>>(row, column, x => Escape(x.ToString())),
            _ => () => $"<{item.RawType.Name}>",
        };
    }

    private static Func<string> Make<T>(DataViewRow row, DataViewSchema.Column column, Func<T, string> format)
    {
        if (column.Type is VectorDataViewType)
        {
            var getter = row.GetGetter<VBuffer<T>>(column);
            VBuffer<T> buffer = default;
            return () =>
            {
                getter(ref buffer);
                var sb = new StringBuilder("[");
                foreach (var x in buffer.DenseValues()) sb.Append(format(x)).Append(',');
                return sb.Append(']').ToString();
            };
        }
        var scalar = row.GetGetter<T>(column);
        T value = default!;
        return () => { scalar(ref value); return format(value); };
    }

    private static string Escape(string s) => s.Replace("\\", "\\\\").Replace("\t", "\\t").Replace("\n", "\\n");
}
